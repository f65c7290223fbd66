/**
 * Test-side token minting for the bench: tens of thousands of single-use client assertions and subject
 * tokens are signed before timing starts, through node:crypto directly (several times jose's rate), so
 * making them never dominates a run. Not product code: the broker verifies everything with jose.
 */
import { createPrivateKey, randomUUID, sign, type KeyObject } from 'node:crypto';
import type { JWK } from 'jose';

export type Claims = Record<string, unknown>;

/** Signs compact ES256 JWSs with one private JWK (its `kid` goes in the header). */
export class Es256Signer {
  readonly #key: KeyObject;
  readonly #header: string;

  constructor(privateJwk: JWK, typ?: string) {
    this.#key = createPrivateKey({ key: privateJwk as import('node:crypto').JsonWebKey, format: 'jwk' });
    this.#header = Buffer.from(JSON.stringify({ alg: 'ES256', ...(privateJwk.kid ? { kid: privateJwk.kid } : {}), ...(typ ? { typ } : {}) })).toString('base64url');
  }

  sign(claims: Claims): string {
    const input = `${this.#header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
    return `${input}.${sign('sha256', Buffer.from(input), { key: this.#key, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
  }

  /** A private_key_jwt client assertion (RFC 7523 §3): fresh `jti`, five minutes to live. */
  clientAssertion(clientId: string, audience: string): string {
    const now = Math.floor(Date.now() / 1000);
    return this.sign({ iss: clientId, sub: clientId, aud: audience, jti: randomUUID(), iat: now, exp: now + 300 });
  }
}
