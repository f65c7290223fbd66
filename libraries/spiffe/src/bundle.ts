/**
 * SPIFFE bundles (SPIFFE_Trust_Domain_and_Bundle.md, JWT-SVID.md §6): a JWK Set with
 * `spiffe_sequence` and `spiffe_refresh_hint`, and the plain JWKS that SPIRE's gRPC APIs send.
 */
import type { JWK } from 'jose';
import { parseSpiffeId, parseTrustDomain } from './spiffe-id.js';

/** Why a bundle document was refused. Stable; safe to log. */
export type BundleErrorReason =
  | 'too_large'
  | 'not_json'
  | 'not_object'
  | 'missing_keys'
  | 'bad_key'
  | 'missing_kid'
  | 'duplicate_kid'
  | 'private_key'
  | 'bad_x5c'
  | 'bad_sequence'
  | 'bad_refresh_hint';

const MESSAGES: Record<BundleErrorReason, string> = {
  too_large: 'bundle document is larger than 1 MiB',
  not_json: 'bundle document is not JSON',
  not_object: 'bundle document is not a JSON object',
  missing_keys: 'bundle document has no "keys" array',
  bad_key: 'bundle key is not an object with a string "kty"',
  missing_kid: 'JWT bundle key has no "kid"',
  duplicate_kid: 'JWT bundle has two keys with the same "kid"',
  private_key: 'bundle key carries private key material',
  bad_x5c: 'x509-svid key must carry exactly one base64 DER certificate in "x5c"',
  bad_sequence: 'spiffe_sequence is not a non-negative safe integer',
  bad_refresh_hint: 'spiffe_refresh_hint is not a non-negative safe integer',
};

/** A bundle document was refused. The message names the rule, never key material. */
export class BundleError extends Error {
  override readonly name = 'BundleError';
  constructor(readonly reason: BundleErrorReason) {
    super(MESSAGES[reason]);
  }
}

/** The JWT-SVID signing keys of one trust domain. */
export interface JwtBundle {
  /** Trust domain name, e.g. `example.org`. */
  readonly trustDomain: string;
  /** Public JWKs, each with a unique `kid`. Empty means every key was revoked. */
  readonly keys: readonly JWK[];
  /** `spiffe_sequence`, when the document has one. */
  readonly sequence?: number;
  /** `spiffe_refresh_hint` in seconds, when the document has one. */
  readonly refreshHintSeconds?: number;
}

/** A full SPIFFE bundle: JWT keys plus the X.509 CA certificates. */
export interface SpiffeBundle extends JwtBundle {
  /** DER CA certificates from the `use: "x509-svid"` keys. */
  readonly x509Authorities: readonly Buffer[];
}

/** Upper bound on a bundle document, in bytes. */
export const MAX_BUNDLE_BYTES = 1024 * 1024;

// JWT-SVID algorithms are RS*, PS* and ES* only (JWT-SVID.md §3), so other key types are
// unusable; the bundle format says unknown key types are skipped, not errors.
const JWT_KEY_TYPES = new Set(['RSA', 'EC']);
// A bundle is published to every relying party: private members mean a misconfigured source.
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Parses a full SPIFFE bundle document (bundle endpoint, `spire-server bundle show -format spiffe`).
 * Keys with `use: "jwt-svid"` become JWT keys (a `kid` is required), `use: "x509-svid"` keys become
 * CA certificates, and keys with a missing or unknown `use` are skipped. Throws {@link BundleError}.
 */
export function parseSpiffeBundle(trustDomain: string, document: string | Uint8Array): SpiffeBundle {
  const td = parseTrustDomain(trustDomain);
  const json = parseDocument(document);
  const jwtKeys: Record<string, unknown>[] = [];
  const x509Authorities: Buffer[] = [];
  for (const key of keyObjects(json)) {
    if (key.use === 'jwt-svid') jwtKeys.push(key);
    else if (key.use === 'x509-svid') x509Authorities.push(x509Authority(key));
  }
  return { ...jwtBundle(td, json, jwtKeys), x509Authorities };
}

/**
 * Parses a plain JWKS as SPIRE's `FetchJWTBundles` and `SubscribeToJWTBundles` send it: every key
 * is a JWT key (SPIRE omits `use`), each needs a unique `kid`. `spiffe_sequence` and
 * `spiffe_refresh_hint` are read when present. Throws {@link BundleError}.
 */
export function parseJwtBundle(trustDomain: string, document: string | Uint8Array): JwtBundle {
  const td = parseTrustDomain(trustDomain);
  const json = parseDocument(document);
  return jwtBundle(td, json, keyObjects(json));
}

/** One entry of a bundle map that was left out, and why. */
export interface RefusedBundle {
  /** The trust domain name, when the map key was a valid trust-domain ID. */
  readonly trustDomain?: string;
  readonly reason: BundleErrorReason | 'bad_trust_domain_id';
}

/**
 * Parses SPIRE's bundle map (`JWTBundlesResponse.bundles`, `SubscribeToJWTBundlesResponse.bundles`):
 * keys are trust-domain IDs `spiffe://<td>`, values plain JWKS. The result is keyed by trust
 * domain name. A bad entry is left out (its keys become untrusted: fail closed) and listed in
 * `refused`; the others still count.
 */
export function parseJwtBundleMap(entries: Readonly<Record<string, Uint8Array>>): {
  bundles: Map<string, JwtBundle>;
  refused: RefusedBundle[];
} {
  const bundles = new Map<string, JwtBundle>();
  const refused: RefusedBundle[] = [];
  for (const [key, document] of Object.entries(entries)) {
    let trustDomain: string;
    try {
      const id = parseSpiffeId(key);
      if (id.path !== '') throw new Error('not a trust-domain ID');
      trustDomain = id.trustDomain;
    } catch {
      refused.push({ reason: 'bad_trust_domain_id' });
      continue;
    }
    try {
      bundles.set(trustDomain, parseJwtBundle(trustDomain, document));
    } catch (error) {
      refused.push({ trustDomain, reason: error instanceof BundleError ? error.reason : 'not_json' });
    }
  }
  return { bundles, refused };
}

function parseDocument(document: string | Uint8Array): Record<string, unknown> {
  const size = typeof document === 'string' ? Buffer.byteLength(document, 'utf8') : document.byteLength;
  if (size > MAX_BUNDLE_BYTES) throw new BundleError('too_large');
  let json: unknown;
  try {
    json = JSON.parse(typeof document === 'string' ? document : new TextDecoder('utf-8', { fatal: true }).decode(document));
  } catch {
    throw new BundleError('not_json');
  }
  if (!isObject(json)) throw new BundleError('not_object');
  return json;
}

function keyObjects(json: Record<string, unknown>): Record<string, unknown>[] {
  const keys = json.keys;
  if (!Array.isArray(keys)) throw new BundleError('missing_keys');
  return keys.map((key: unknown) => {
    if (!isObject(key) || typeof key.kty !== 'string') throw new BundleError('bad_key');
    if (PRIVATE_MEMBERS.some((member) => member in key)) throw new BundleError('private_key');
    return key;
  });
}

function jwtBundle(trustDomain: string, json: Record<string, unknown>, candidates: Record<string, unknown>[]): JwtBundle {
  const keys: JWK[] = [];
  const kids = new Set<string>();
  for (const key of candidates) {
    if (!JWT_KEY_TYPES.has(key.kty as string)) continue;
    // go-spiffe refuses JWT keys without a key id, and validation looks keys up by `kid`.
    if (typeof key.kid !== 'string' || key.kid === '') throw new BundleError('missing_kid');
    if (kids.has(key.kid)) throw new BundleError('duplicate_kid');
    kids.add(key.kid);
    keys.push(structuredClone(key) as JWK);
  }
  const bundle: { -readonly [K in keyof JwtBundle]: JwtBundle[K] } = { trustDomain, keys };
  const sequence = optionalCount(json.spiffe_sequence, 'bad_sequence');
  if (sequence !== undefined) bundle.sequence = sequence;
  const refreshHint = optionalCount(json.spiffe_refresh_hint, 'bad_refresh_hint');
  if (refreshHint !== undefined) bundle.refreshHintSeconds = refreshHint;
  return bundle;
}

function x509Authority(key: Record<string, unknown>): Buffer {
  const x5c = key.x5c;
  if (!Array.isArray(x5c) || x5c.length !== 1) throw new BundleError('bad_x5c');
  const [cert] = x5c as unknown[];
  if (typeof cert !== 'string' || cert === '' || !BASE64.test(cert)) throw new BundleError('bad_x5c');
  return Buffer.from(cert, 'base64');
}

// Sequence numbers count bundle changes from 1, far from 2^53; anything beyond the safe range
// would be silently rounded by JSON.parse, so it is refused instead.
function optionalCount(value: unknown, reason: BundleErrorReason): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new BundleError(reason);
  return value;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
