import getRawBody from 'raw-body';
import type { Context } from 'koa';
import { InvalidRequest } from '@tessera/plugin-sdk';
import { REPEATABLE_PARAMETERS } from '../oauth/request.js';

/**
 * The JSON exchange front door: the same parameter names as the form-encoded token endpoint, in one JSON
 * object. Values are strings; `audience` and `resource` may also be arrays of strings. Empty strings are
 * dropped (same as absent), exactly as the form reader does, so both doors feed one pipeline identically.
 */
export async function readJsonParameters(ctx: Context, maxBytes: number): Promise<Map<string, string[]>> {
  if (!ctx.request.is('application/json')) {
    throw new InvalidRequest('content type must be application/json', { status: 415, detail: 'content type' });
  }
  const encoding = ctx.get('content-encoding');
  if (encoding && encoding.toLowerCase() !== 'identity') {
    throw new InvalidRequest('content encoding is not supported', { status: 415, detail: 'content encoding' });
  }
  let text: string;
  try {
    text = await getRawBody(ctx.req, { limit: maxBytes, length: ctx.get('content-length') || undefined, encoding: 'utf8' });
  } catch (error) {
    const type = (error as { type?: string }).type;
    if (type === 'entity.too.large') throw new InvalidRequest('request body too large', { status: 413, detail: 'body size' });
    throw new InvalidRequest('request body could not be read', { detail: `body: ${type ?? 'read error'}` });
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new InvalidRequest('request body is not valid JSON', { detail: 'json syntax' });
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new InvalidRequest('request body must be a JSON object', { detail: 'json shape' });
  }
  const parameters = new Map<string, string[]>();
  for (const [name, value] of Object.entries(body)) {
    const values = typeof value === 'string' ? [value] : REPEATABLE_PARAMETERS.has(name) && isStringArray(value) ? value : undefined;
    if (values === undefined) {
      throw new InvalidRequest('parameter values must be strings', { detail: `json value type of ${name.slice(0, 64)}` });
    }
    const present = values.filter((item) => item !== '');
    if (present.length > 0) parameters.set(name, present);
  }
  return parameters;
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.length <= 64 && value.every((item) => typeof item === 'string');
}
