// RFC 7515 §7.1 + §2: three base64url segments without padding, whitespace or other characters.
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+$/;

/**
 * True when `value` is a compact JWS in canonical encoding. JOSE libraries decode base64url leniently
 * (padding, spaces); gating on the canonical form first keeps one token from having many spellings.
 */
export function isCompactJws(value: string): boolean {
  return COMPACT_JWS.test(value);
}
