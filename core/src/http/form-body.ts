import type { Context } from 'koa';
import { InvalidRequest } from '@tessera/plugin-sdk';
import { REPEATABLE_PARAMETERS } from '../oauth/request.js';
import { readBodyText } from './body-text.js';

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
  const text = await readBodyText(ctx, maxBytes);
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
