import { constants, sign, type KeyObject } from 'node:crypto';
import type { JWTPayload } from 'jose';
import type { SIGNING_ALGORITHMS } from '../config/schema.js';

type SigningAlgorithm = (typeof SIGNING_ALGORITHMS)[number];

/** How node:crypto produces each JWS algorithm's signature (RFC 7518 §3, RFC 8037 §3.1). */
const SIGNERS: Readonly<Record<SigningAlgorithm, (input: Buffer, key: KeyObject) => Buffer>> = {
  // JWS ECDSA signatures are R || S of fixed length, not DER (RFC 7518 §3.4).
  ES256: (input, key) => sign('sha256', input, { key, dsaEncoding: 'ieee-p1363' }),
  ES384: (input, key) => sign('sha384', input, { key, dsaEncoding: 'ieee-p1363' }),
  EdDSA: (input, key) => sign(null, input, key),
  RS256: (input, key) => sign('sha256', input, { key, padding: constants.RSA_PKCS1_PADDING }),
  // RFC 7518 §3.5: the salt is as long as the hash.
  PS256: (input, key) => sign('sha256', input, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }),
};

/**
 * A compact JWS of the broker's own claims, signed with its own key through node:crypto on the calling
 * thread: the same bytes jose's SignJWT would produce (header members in this order, claims as given),
 * without WebCrypto's per-call key conversion and thread-pool round trip, which cost a third of an
 * exchange's signing time here (docs/performance.md). Verification of tokens from elsewhere stays with jose.
 */
export function signCompactJwt(claims: JWTPayload, header: { readonly alg: SigningAlgorithm; readonly kid: string; readonly typ: string }, key: KeyObject): string {
  const input = `${base64url({ alg: header.alg, kid: header.kid, typ: header.typ })}.${base64url(claims)}`;
  return `${input}.${SIGNERS[header.alg](Buffer.from(input), key).toString('base64url')}`;
}

function base64url(value: object): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}
