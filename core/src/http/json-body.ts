import type { Context } from 'koa';
import { hasDuplicateMembers, InvalidRequest } from '@tessera/plugin-sdk';
import { REPEATABLE_PARAMETERS } from '../oauth/request.js';
import { readBodyText } from './body-text.js';

/**
 * The JSON exchange front door: the same parameter names as the form-encoded token endpoint, in one JSON
 * object. Values are strings; `audience` and `resource` may also be arrays of strings. Empty strings are
 * dropped (same as absent), exactly as the form reader does, so both doors feed one pipeline identically.
 */
export async function readJsonParameters(ctx: Context, maxBytes: number): Promise<Map<string, string[]>> {
  if (!ctx.request.is('application/json')) {
    throw new InvalidRequest('content type must be application/json', { status: 415, detail: 'content type' });
  }
  // RFC 8259 §8.1: JSON between systems is UTF-8.
  const charset = ctx.request.charset;
  if (charset && charset.toLowerCase() !== 'utf-8') {
    throw new InvalidRequest('charset must be utf-8', { status: 415, detail: 'charset' });
  }
  const text = await readBodyText(ctx, maxBytes);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new InvalidRequest('request body is not valid JSON', { detail: 'json syntax' });
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new InvalidRequest('request body must be a JSON object', { detail: 'json shape' });
  }
  // JSON.parse keeps the last of repeated members; a proxy may read the first. Refuse, as the form door does.
  if (hasDuplicateMembers(text)) throw new InvalidRequest('a parameter is repeated', { detail: 'json repeated member' });
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
