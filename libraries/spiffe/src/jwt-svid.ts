/**
 * Reads the times out of a JWT-SVID an agent handed us. Decoding, not verifying: the token comes
 * from the local agent over its socket, and whoever receives it verifies it against the bundle.
 */
import { decodeJwt } from 'jose';

/** Why a JWT-SVID from the agent is unusable; names the rule only. */
export class MalformedSvid extends Error {}

export function jwtSvidTimes(token: string, spiffeId: string): { expiresAt: Date; issuedAt?: Date } {
  let claims: ReturnType<typeof decodeJwt>;
  try {
    claims = decodeJwt(token);
  } catch {
    throw new MalformedSvid('JWT-SVID is not a decodable JWT');
  }
  // JWT-SVID §3: sub is the SPIFFE ID; a mismatch means the agent's answer is inconsistent.
  if (claims.sub !== spiffeId) throw new MalformedSvid('JWT-SVID sub differs from its SPIFFE ID');
  if (typeof claims.exp !== 'number' || !Number.isFinite(claims.exp)) throw new MalformedSvid('JWT-SVID has no numeric exp');
  const times: { expiresAt: Date; issuedAt?: Date } = { expiresAt: new Date(claims.exp * 1000) };
  if (typeof claims.iat === 'number' && Number.isFinite(claims.iat)) times.issuedAt = new Date(claims.iat * 1000);
  return times;
}
