import { decodeJwt, decodeProtectedHeader, type JWTPayload, type ProtectedHeaderParameters } from 'jose';
import { InvalidToken } from './errors.js';
import { hasDuplicateMembers } from './json-members.js';

// RFC 7515 §7.1 + §2: three base64url segments without padding, whitespace or other characters.
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+$/;
const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * RFC 4648 §3.5: an encoder sets the bits past the last whole byte to zero. A decoder ignores them, so a
 * segment whose length leaves 4 (or 2) unused bits has 16 (or 4) spellings of the same bytes; only the one
 * with zero bits is canonical. A length of 1 mod 4 encodes no whole byte and is never valid.
 */
function isCanonicalSegment(segment: string): boolean {
  const unusedBits = [0, -1, 4, 2][segment.length % 4]!;
  if (unusedBits <= 0) return unusedBits === 0;
  const last = BASE64URL.indexOf(segment[segment.length - 1]!);
  return (last & ((1 << unusedBits) - 1)) === 0;
}

/**
 * True when `value` is a compact JWS in canonical encoding: one token, one spelling. JOSE libraries
 * decode base64url leniently (padding, spaces, stray trailing bits); gating on the canonical form first
 * means a changed byte anywhere, signature included, always changes what is verified.
 */
export function isCompactJws(value: string): boolean {
  return COMPACT_JWS.test(value) && value.split('.').every(isCanonicalSegment);
}

/** A JWT's header and claims, decoded but not verified: they may only choose how to verify it. */
export interface UnverifiedJwt {
  readonly header: ProtectedHeaderParameters;
  readonly payload: JWTPayload;
}

/**
 * The checks every JWT validator starts with, before any key is looked up: at most `maxBytes`, canonical
 * compact JWS, a decodable header and claims set with no member named twice, and registered claims of
 * their registered types (RFC 7519 §4.1). Throws `InvalidToken` (`too_large`, `malformed`, `claims`).
 */
export function decodeUnverifiedJwt(token: string, maxBytes: number): UnverifiedJwt {
  if (token.length > maxBytes) throw new InvalidToken('too_large');
  if (!isCompactJws(token)) throw new InvalidToken('malformed', 'not a compact JWS');
  let decoded: UnverifiedJwt;
  try {
    decoded = { header: decodeProtectedHeader(token), payload: decodeJwt(token) };
  } catch {
    throw new InvalidToken('malformed');
  }
  // One token, one meaning: the header and claims a verifier reads are the ones every other reader sees.
  // (jose has already refused segments that are not UTF-8.)
  const texts = token.split('.', 2).map((segment) => Buffer.from(segment, 'base64url').toString('utf8'));
  if (texts.some(hasDuplicateMembers)) throw new InvalidToken('malformed', 'a member is named twice');
  const mistyped = mistypedRegisteredClaim(decoded.payload);
  if (mistyped) throw new InvalidToken('claims', `claim ${mistyped} has the wrong type`);
  return decoded;
}

const STRING_CLAIMS = ['iss', 'sub', 'jti'] as const;
const NUMERIC_DATE_CLAIMS = ['exp', 'nbf', 'iat'] as const;

/** RFC 7519 §4.1: `iss`, `sub`, `jti` are strings, `aud` a string or strings, `exp`/`nbf`/`iat` NumericDates. */
function mistypedRegisteredClaim(payload: JWTPayload): string | undefined {
  for (const claim of STRING_CLAIMS) if (payload[claim] !== undefined && typeof payload[claim] !== 'string') return claim;
  for (const claim of NUMERIC_DATE_CLAIMS) if (payload[claim] !== undefined && !Number.isFinite(payload[claim])) return claim;
  const { aud } = payload;
  if (aud !== undefined && typeof aud !== 'string' && !(Array.isArray(aud) && aud.every((item) => typeof item === 'string'))) return 'aud';
  return undefined;
}

