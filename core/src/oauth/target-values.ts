import { isIPv6 } from 'node:net';
import type { Grant } from '@tessera/plugin-sdk';

/**
 * What a value must look like to be requested as, or signed into, an audience, resource or scope. Checked
 * on the way in (before policy matching) and again on every grant before it is issued, because policy can
 * build audiences from claim values.
 */

// RFC 3986 Appendix A, ASCII only: anything else (space, controls, non-ASCII, a stray `%`) is not a URI.
const UNRESERVED = 'A-Za-z0-9._~\\-';
const SUB_DELIMS = "!$&'()*+,;=";
const PCT = '%[0-9A-Fa-f]{2}';
const PCHAR = `(?:[${UNRESERVED}${SUB_DELIMS}:@]|${PCT})`;
const SCHEME = '[A-Za-z][A-Za-z0-9+.-]*';
const USERINFO = `(?:[${UNRESERVED}${SUB_DELIMS}:]|${PCT})*`;
const REG_NAME = `(?:[${UNRESERVED}${SUB_DELIMS}]|${PCT})*`;
// ABNF literals are case-insensitive: IPvFuture starts with v or V.
const IP_LITERAL = '\\[([0-9A-Fa-f:.]+|[vV][0-9A-Fa-f]+\\.[A-Za-z0-9._~!$&\'()*+,;=:-]+)\\]';
const SEGMENT = `${PCHAR}*`;
const SEGMENT_NZ = `${PCHAR}+`;
const AUTHORITY = `(?:${USERINFO}@)?(?:${IP_LITERAL}|${REG_NAME})(?::[0-9]*)?`;
const HIER_PART = `(?://${AUTHORITY}(?:/${SEGMENT})*|/(?:${SEGMENT_NZ}(?:/${SEGMENT})*)?|${SEGMENT_NZ}(?:/${SEGMENT})*|)`;
const QUERY = `(?:${PCHAR}|[/?])*`;
// absolute-URI = scheme ":" hier-part [ "?" query ]: no fragment by construction.
const ABSOLUTE_URI = new RegExp(`^${SCHEME}:${HIER_PART}(?:\\?${QUERY})?$`);

/** RFC 8707 §2 and RFC 8693 §2.1: `resource` is an absolute URI (RFC 3986 §4.3) without a fragment. */
export function isAbsoluteUriWithoutFragment(value: string): boolean {
  const match = ABSOLUTE_URI.exec(value);
  if (!match) return false;
  // An IPv6 literal (not IPvFuture) must be a real IPv6 address.
  const literal = match[1];
  return literal === undefined || /^[vV]/.test(literal) || isIPv6(literal);
}

// Controls (C0, DEL, C1), invisible format characters (bidi overrides, zero-width, BOM) and any kind of
// space: a value holding one displays, compares or splits differently downstream than it was checked here.
const UNSAFE_IN_VALUE = /[\p{Cc}\p{Cf}\p{Z}\s]/u;

/**
 * RFC 8693 §2.1: `audience` is any string, but a value signed into `aud` must mean one thing to every
 * reader: well-formed Unicode (no lone surrogate, which also marks undecodable input), no controls, NUL,
 * format characters or whitespace.
 */
export function isSafeAudience(value: string): boolean {
  return value !== '' && value.isWellFormed() && !UNSAFE_IN_VALUE.test(value);
}

// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

export function isScopeToken(value: string): boolean {
  return SCOPE_TOKEN.test(value);
}

/** Why a grant may not be signed, if so: policy can fill audiences from claims, so they are checked again. */
export function unsafeGrantValue(grant: Pick<Grant, 'audiences' | 'scopes' | 'ruleId'>): string | undefined {
  if (grant.audiences.every(isSafeAudience) && grant.scopes.every(isScopeToken)) return undefined;
  return `grant holds an audience or scope with characters that are not allowed (rule ${grant.ruleId})`;
}
