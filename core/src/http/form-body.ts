import type { Context } from 'koa';
import { InvalidRequest } from '@tessera/plugin-sdk';
import { REPEATABLE_PARAMETERS } from '../oauth/request.js';
import { readBodyText } from './body-text.js';

/**
 * RFC 6749 §3.2 and Appendix B: token requests are `application/x-www-form-urlencoded` UTF-8 bodies.
 * Reads at most `maxBytes`, decodes strictly (see `decodeFormComponent`), drops empty values (same as
 * absent) and refuses any repeated parameter other than `audience`/`resource`.
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
  for (const pair of text.split('&')) {
    if (pair === '') continue;
    const equals = pair.indexOf('=');
    const name = decodeFormComponent(equals < 0 ? pair : pair.slice(0, equals));
    const value = decodeFormComponent(equals < 0 ? '' : pair.slice(equals + 1));
    if (!name.isWellFormed()) throw new InvalidRequest('a parameter name is not valid UTF-8', { detail: 'parameter name encoding' });
    if (value === '') continue;
    const values = parameters.get(name);
    if (!values) parameters.set(name, [value]);
    else if (REPEATABLE_PARAMETERS.has(name)) values.push(value);
    else throw new InvalidRequest('a parameter is repeated', { detail: `repeated parameter ${name.slice(0, 64)}` });
  }
  return parameters;
}

/**
 * One name or value: `+` is a space, `%XX` a byte, and the bytes must be UTF-8. Where they are not (or a
 * `%` starts no escape), the WHATWG parser would substitute U+FFFD or keep the text, so `%FF` and
 * `%EF%BF%BD` would read alike. Here such a value becomes a lone surrogate, which no UTF-8 decodes to:
 * every later check sees it as not well-formed and refuses it with the error its parameter calls for
 * (`invalid_target` for an audience, `invalid_scope` for a scope, `invalid_request` otherwise).
 */
export function decodeFormComponent(raw: string): string {
  try {
    return decodeURIComponent(raw.replaceAll('+', ' '));
  } catch {
    return NOT_UTF8;
  }
}

/** Stands for a value whose bytes were not UTF-8 (well-formed strings never contain a lone surrogate). */
const NOT_UTF8 = '\uDC80';
