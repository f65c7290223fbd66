import getRawBody from 'raw-body';
import type { Context } from 'koa';
import { InvalidRequest } from '@tessera/plugin-sdk';
import { REPEATABLE_PARAMETERS } from '../oauth/request.js';

/**
 * RFC 6749 §3.2: token requests are `application/x-www-form-urlencoded` UTF-8 bodies. Reads at most
 * `maxBytes`, decodes with the WHATWG form parser, drops empty values (same as absent) and refuses any
 * repeated parameter other than `audience`/`resource`.
 */
export async function readFormBody(ctx: Context, maxBytes: number): Promise<Map<string, string[]>> {
  if (!ctx.request.is('application/x-www-form-urlencoded')) {
    throw new InvalidRequest('content type must be application/x-www-form-urlencoded', { status: 415, detail: 'content type' });
  }
  const charset = ctx.request.charset;
  if (charset && charset.toLowerCase() !== 'utf-8') {
    throw new InvalidRequest('charset must be utf-8', { status: 415, detail: 'charset' });
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
  const parameters = new Map<string, string[]>();
  for (const [name, value] of new URLSearchParams(text)) {
    if (value === '') continue;
    const values = parameters.get(name);
    if (!values) parameters.set(name, [value]);
    else if (REPEATABLE_PARAMETERS.has(name)) values.push(value);
    else throw new InvalidRequest('a parameter is repeated', { detail: `repeated parameter ${name.slice(0, 64)}` });
  }
  return parameters;
}
