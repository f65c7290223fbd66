import { decodeJwt, decodeProtectedHeader, type JWTPayload, type ProtectedHeaderParameters } from 'jose';
import { InvalidToken } from './errors.js';

// RFC 7515 §7.1 + §2: three base64url segments without padding, whitespace or other characters.
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+$/;

/**
 * True when `value` is a compact JWS in canonical encoding. JOSE libraries decode base64url leniently
 * (padding, spaces); gating on the canonical form first keeps one token from having many spellings.
 */
export function isCompactJws(value: string): boolean {
  return COMPACT_JWS.test(value);
}

/** A JWT's header and claims, decoded but not verified: they may only choose how to verify it. */
export interface UnverifiedJwt {
  readonly header: ProtectedHeaderParameters;
  readonly payload: JWTPayload;
}

/**
 * The checks every JWT validator starts with, before any key is looked up: at most `maxBytes`, canonical
 * compact JWS, a decodable header and claims set. Throws `InvalidToken` (`too_large`, `malformed`).
 */
export function decodeUnverifiedJwt(token: string, maxBytes: number): UnverifiedJwt {
  if (token.length > maxBytes) throw new InvalidToken('too_large');
  if (!isCompactJws(token)) throw new InvalidToken('malformed', 'not a compact JWS');
  try {
    return { header: decodeProtectedHeader(token), payload: decodeJwt(token) };
  } catch {
    throw new InvalidToken('malformed');
  }
}
