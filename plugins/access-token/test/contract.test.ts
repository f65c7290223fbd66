import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { SignJWT, type JWK } from 'jose';
import { TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT, type KeyRing } from '@tessera/plugin-sdk';
import { generateTestKey } from '@tessera/plugin-testkit';
import { CONTRACT_CLIENT_ID, describeIssuerContract, describeValidatorContract, type MintRequest } from '@tessera/plugin-testkit/contract';

describeIssuerContract('@tessera/plugin-access-token', async () => ({
  tokenType: TOKEN_TYPE_ACCESS_TOKEN,
  plugin: () => ({ use: '@tessera/plugin-access-token' }),
  // Resource servers verify these like any OIDC-style JWT: the broker's JWKS, its issuer, their own audience.
  // (The plugin's own validator cannot be the round trip: it accepts only audiences naming the broker or the
  // presenting client, and a second copy of the plugin would claim the same token types.)
  roundTrip: (broker, audiences) => ({
    tokenType: TOKEN_TYPE_JWT,
    plugin: {
      use: '@tessera/plugin-oidc',
      config: { tokenTypes: [TOKEN_TYPE_JWT], issuers: [{ issuer: broker.issuer, jwksUri: `${broker.issuer}/keys`, allowedAudiences: audiences }] },
    },
  }),
}));

/**
 * The validator trusts nothing but the broker's own key ring, which the contract harness generates
 * privately. The plugin is therefore loaded through a probe (the real plugin, unchanged, that also hands
 * the ring to this test), so `mint` signs exactly as the broker's issuer does.
 */
const PROBE = fileURLToPath(new URL('./fixtures/key-ring-probe.mjs', import.meta.url));

describeValidatorContract('@tessera/plugin-access-token (own tokens)', async () => {
  let issuer = '';
  const ring = (): KeyRing => {
    const found = (globalThis as { tesseraContractKeyRings?: Map<string, KeyRing> }).tesseraContractKeyRings?.get(issuer);
    if (!found) throw new Error('the key-ring probe did not start');
    return found;
  };
  const claims = (brokerIssuer: string, { audience, expiresIn = 300 }: MintRequest) => {
    const now = Math.floor(Date.now() / 1000);
    const exp = now + expiresIn;
    return { iss: brokerIssuer, sub: 'contract-subject', aud: audience, iat: Math.min(now, exp - 60), exp, jti: randomUUID(), client_id: CONTRACT_CLIENT_ID, scope: 'contract.read' };
  };
  // Another Tessera: its own key and its own issuer.
  const foreign = await generateTestKey('ES256');
  return {
    tokenType: TOKEN_TYPE_ACCESS_TOKEN,
    plugin: (broker) => {
      issuer = broker.issuer;
      return { use: PROBE };
    },
    // Loaded by path, the probe is not the built-in package: the operator grants it broker trust.
    delegation: { actorTrust: { 'access-token': 'broker' } },
    mint: async (request) => (await ring().sign(claims(issuer, request), { typ: 'at+jwt' })).token,
    mintUntrusted: (request) =>
      new SignJWT(claims('https://other-tessera.contract.example.test', request)).setProtectedHeader({ alg: 'ES256', kid: foreign.kid, typ: 'at+jwt' }).sign(foreign.privateKey),
    get trustedPublicJwk(): JWK {
      return ring().publicJwks().keys[0]!;
    },
    // No upstream: the validator does no I/O (its keys and revocation list are in process).
  };
});
