import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { compactVerify, decodeProtectedHeader, jwtVerify, SignJWT } from 'jose';
import { SIGNING_ALGORITHMS } from '../src/config/schema.js';
import { signCompactJwt } from '../src/keys/compact-sign.js';

function keyFor(alg: (typeof SIGNING_ALGORITHMS)[number]): KeyObject {
  if (alg === 'ES256') return generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  if (alg === 'ES384') return generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
  if (alg === 'EdDSA') return generateKeyPairSync('ed25519').privateKey;
  return generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
}

const claims = { iss: 'https://broker.example.test', sub: 'alice', aud: 'https://api.example.test', iat: 1_800_000_000, exp: 1_800_000_600, jti: 'j-1', scope: 'read' };

/** The broker's own tokens are signed through node:crypto; jose, which every relying party may use, must accept them. */
describe('signCompactJwt', () => {
  it.each(SIGNING_ALGORITHMS)('%s: jose verifies it, with the header and claims as given', async (alg) => {
    const key = keyFor(alg);
    const token = signCompactJwt(claims, { alg, kid: 'k1', typ: 'at+jwt' }, key);
    const { payload, protectedHeader } = await jwtVerify(token, createPublicKey(key), { algorithms: [alg], typ: 'at+jwt', currentDate: new Date(1_800_000_100_000) });
    expect(protectedHeader).toEqual({ alg, kid: 'k1', typ: 'at+jwt' });
    expect(payload).toEqual(claims);
  });

  // Deterministic signatures (RFC 8032, PKCS #1 v1.5): the very bytes jose's SignJWT produces.
  it.each(['EdDSA', 'RS256'] as const)('%s: byte for byte what jose signs', async (alg) => {
    const key = keyFor(alg);
    const ours = signCompactJwt(claims, { alg, kid: 'k1', typ: 'at+jwt' }, key);
    const theirs = await new SignJWT(claims).setProtectedHeader({ alg, kid: 'k1', typ: 'at+jwt' }).sign(key);
    expect(ours).toBe(theirs);
  });

  it('a changed byte in the claims fails verification', async () => {
    const key = keyFor('ES256');
    const [header, payload, signature] = signCompactJwt(claims, { alg: 'ES256', kid: 'k1', typ: 'at+jwt' }, key).split('.') as [string, string, string];
    const forged = `${header}.${Buffer.from(JSON.stringify({ ...claims, sub: 'mallory' })).toString('base64url')}.${signature}`;
    expect(payload).not.toBe(forged.split('.')[1]);
    await expect(compactVerify(forged, createPublicKey(key))).rejects.toThrow();
    expect(decodeProtectedHeader(forged).alg).toBe('ES256');
  });
});
