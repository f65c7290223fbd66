/**
 * SPIFFE IDs (SPIFFE-ID.md §2): `spiffe://<trust-domain><path>`.
 *
 * Parsed by hand, not with WHATWG `URL`: that parser lowercases, resolves `.`/`..`, decodes and
 * re-encodes, so two different strings could become one identity.
 */

/** Why a string is not a SPIFFE ID or trust domain name. Stable; safe to log. */
export type SpiffeIdErrorReason =
  | 'empty'
  | 'too_long'
  | 'wrong_scheme'
  | 'missing_trust_domain'
  | 'trust_domain_too_long'
  | 'userinfo'
  | 'port'
  | 'query'
  | 'fragment'
  | 'percent_encoding'
  | 'uppercase_trust_domain'
  | 'bad_trust_domain_char'
  | 'empty_segment'
  | 'dot_segment'
  | 'trailing_slash'
  | 'bad_path_char';

const MESSAGES: Record<SpiffeIdErrorReason, string> = {
  empty: 'SPIFFE ID is empty',
  too_long: 'SPIFFE ID is longer than 2048 bytes',
  wrong_scheme: 'SPIFFE ID must start with spiffe://',
  missing_trust_domain: 'trust domain is missing',
  trust_domain_too_long: 'trust domain is longer than 255 bytes',
  userinfo: 'trust domain must not contain userinfo',
  port: 'trust domain must not contain a port',
  query: 'SPIFFE ID must not contain a query',
  fragment: 'SPIFFE ID must not contain a fragment',
  percent_encoding: 'SPIFFE ID must not contain percent-encoding',
  uppercase_trust_domain: 'trust domain must be lowercase',
  bad_trust_domain_char: 'trust domain characters are limited to a-z, 0-9, ".", "-" and "_"',
  empty_segment: 'path must not contain empty segments',
  dot_segment: 'path must not contain "." or ".." segments',
  trailing_slash: 'path must not end with "/"',
  bad_path_char: 'path characters are limited to a-z, A-Z, 0-9, ".", "-" and "_"',
};

/** A string was not a valid SPIFFE ID or trust domain. The message never contains the input. */
export class SpiffeIdError extends Error {
  override readonly name = 'SpiffeIdError';
  constructor(readonly reason: SpiffeIdErrorReason) {
    super(MESSAGES[reason]);
  }
}

/** A parsed, valid SPIFFE ID. `toString()` gives back the exact input. */
export interface SpiffeId {
  /** Trust domain name, e.g. `example.org`. */
  readonly trustDomain: string;
  /** `''` or `/seg/seg…`; case-sensitive. */
  readonly path: string;
  toString(): string;
}

const SCHEME = 'spiffe://';
const MAX_ID_BYTES = 2048;
const MAX_TRUST_DOMAIN_BYTES = 255;
const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/;
const PATH_SEGMENT_CHARS = /^[a-zA-Z0-9._-]+$/;

class ParsedSpiffeId implements SpiffeId {
  constructor(
    readonly trustDomain: string,
    readonly path: string,
  ) {
    Object.freeze(this);
  }
  toString(): string {
    return `${SCHEME}${this.trustDomain}${this.path}`;
  }
  toJSON(): string {
    return this.toString();
  }
}

/** Parses a SPIFFE ID strictly (spec §2: no folding, no normalisation). Throws {@link SpiffeIdError}. */
export function parseSpiffeId(text: string): SpiffeId {
  if (typeof text !== 'string' || text === '') throw new SpiffeIdError('empty');
  // Measured before anything else so the scans below are bounded.
  if (Buffer.byteLength(text, 'utf8') > MAX_ID_BYTES) throw new SpiffeIdError('too_long');
  // Scheme is compared case-sensitively: go-spiffe rejects `SPIFFE://` too.
  if (!text.startsWith(SCHEME)) throw new SpiffeIdError('wrong_scheme');
  const rest = text.slice(SCHEME.length);
  if (rest.includes('#')) throw new SpiffeIdError('fragment');
  if (rest.includes('?')) throw new SpiffeIdError('query');
  if (rest.includes('%')) throw new SpiffeIdError('percent_encoding');
  const slash = rest.indexOf('/');
  const authority = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash);
  checkTrustDomain(authority);
  checkPath(path);
  return new ParsedSpiffeId(authority, path);
}

/** True when `value` is a string {@link parseSpiffeId} accepts. */
export function isSpiffeId(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  try {
    parseSpiffeId(value);
    return true;
  } catch {
    return false;
  }
}

/**
 * Validates a bare trust domain name (`example.org`, not `spiffe://example.org`) and returns it.
 * Throws {@link SpiffeIdError}.
 */
export function parseTrustDomain(name: string): string {
  if (typeof name !== 'string') throw new SpiffeIdError('missing_trust_domain');
  checkTrustDomain(name);
  return name;
}

/** The trust domain's own ID, `spiffe://<td>`: the key of SPIRE's bundle maps. */
export function trustDomainId(trustDomain: string): string {
  return `${SCHEME}${parseTrustDomain(trustDomain)}`;
}

function checkTrustDomain(name: string): void {
  if (name === '') throw new SpiffeIdError('missing_trust_domain');
  if (Buffer.byteLength(name, 'utf8') > MAX_TRUST_DOMAIN_BYTES) throw new SpiffeIdError('trust_domain_too_long');
  if (name.includes('@')) throw new SpiffeIdError('userinfo');
  if (name.includes('%')) throw new SpiffeIdError('percent_encoding');
  // `[` first: an IPv6 literal is a bad name (spec §1), not a host with a port.
  if (name.startsWith('[')) throw new SpiffeIdError('bad_trust_domain_char');
  if (name.includes(':')) throw new SpiffeIdError('port');
  if (TRUST_DOMAIN_CHARS.test(name)) return;
  // ASCII only: String#toLowerCase would also fold e.g. the Kelvin sign into `k`.
  if (TRUST_DOMAIN_CHARS.test(name.replace(/[A-Z]/g, (c) => c.toLowerCase()))) {
    throw new SpiffeIdError('uppercase_trust_domain');
  }
  throw new SpiffeIdError('bad_trust_domain_char');
}

function checkPath(path: string): void {
  if (path === '') return;
  const segments = path.slice(1).split('/');
  segments.forEach((segment, index) => {
    if (segment === '') throw new SpiffeIdError(index === segments.length - 1 ? 'trailing_slash' : 'empty_segment');
    if (segment === '.' || segment === '..') throw new SpiffeIdError('dot_segment');
    if (!PATH_SEGMENT_CHARS.test(segment)) throw new SpiffeIdError('bad_path_char');
  });
}
