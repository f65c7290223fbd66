import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt, SignJWT } from 'jose';
import { validateConfig } from '@tessera/core';
import { accessTokenPlugin, generateTestKey, postToken, startBroker, type RunningBroker, JWT_SPIFFE } from './support.js';
import type { TestKey } from '@tessera/plugin-testkit';

const DOWNSTREAM = 'https://payments-api.example.test';

/** The SPIFFE→OAuth bridge: a workload's JWT-SVID is its client credential; no registration, no secret. */
describe('JWT-SVID client authentication', () => {
  let key: TestKey;
  let running: RunningBroker;

  beforeAll(async () => {
    key = await generateTestKey('ES256');
    const dir = await mkdtemp(join(tmpdir(), 'tessera-spiffe-auth-'));
    const { alg: _alg, use: _use, ...jwk } = key.publicJwk;
    await writeFile(join(dir, 'bundle.json'), JSON.stringify({ keys: [{ ...jwk, use: 'jwt-svid' }] }));
    running = await startBroker(() => ({
      clients: [
        { id: 'spiffe://example.org/ns/payments/sa/*', auth: { method: 'spiffe_jwt' }, grantTypes: ['client_credentials', 'token_exchange'] },
        { id: 'spiffe://example.org/ns/*/sa/*', auth: { method: 'spiffe_jwt' }, grantTypes: ['token_exchange'] },
      ],
      plugins: [{ use: '@tessera/plugin-spiffe', config: { trustDomains: [{ name: 'example.org', bundle: { file: join(dir, 'bundle.json') } }] } }, accessTokenPlugin],
      policy: {
        rules: [
          {
            id: 'payments-workloads',
            match: { clients: ['spiffe://example.org/ns/payments/sa/*'], grantTypes: ['client_credentials'], attributes: { 'spiffe.trustDomain': 'example.org' } },
            grant: { audiences: [DOWNSTREAM], scopes: ['payments.read'], maxLifetimeSeconds: 600 },
          },
        ],
      },
    }));
  });
  afterAll(() => running?.close());

  const svid = (spiffeId: string, audience: string | string[], claims: Record<string, unknown> = {}, lifetime = 300) => {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ sub: spiffeId, aud: audience, iat: now, exp: now + lifetime, ...claims })
      .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'JWT' })
      .sign(key.privateKey);
  };
  const clientCredentials = async (assertion: string, extra: Record<string, string> = {}) =>
    postToken(running.tokenEndpoint, { grant_type: 'client_credentials', client_assertion_type: JWT_SPIFFE, client_assertion: assertion, audience: DOWNSTREAM, ...extra });

  it('issues an access token for the downstream audience to a workload that presents its JWT-SVID', async () => {
    const response = await clientCredentials(await svid('spiffe://example.org/ns/payments/sa/api', running.issuer), { scope: 'payments.read' });
    expect(response.status, response.text).toBe(200);
    const claims = decodeJwt(response.body.access_token as string);
    expect(claims).toMatchObject({ sub: 'spiffe://example.org/ns/payments/sa/api', client_id: 'spiffe://example.org/ns/payments/sa/api', aud: DOWNSTREAM, scope: 'payments.read' });
    // Never outlives the SVID that proved the client.
    expect(claims.exp!).toBeLessThanOrEqual(Math.floor(Date.now() / 1000) + 301);
    expect(running.audit.records.at(-1)).toMatchObject({
      decision: 'allow',
      client: { id: 'spiffe://example.org/ns/payments/sa/api', authMethod: 'spiffe_jwt' },
      subject: { issuer: 'spiffe://example.org', subject: 'spiffe://example.org/ns/payments/sa/api' },
    });
  });

  it('accepts the token endpoint as audience too, and a reused SVID without jti (SPIRE caches SVIDs)', async () => {
    const assertion = await svid('spiffe://example.org/ns/payments/sa/api', running.tokenEndpoint);
    expect((await clientCredentials(assertion)).status).toBe(200);
    expect((await clientCredentials(assertion)).status).toBe(200);
  });

  it('refuses a replayed SVID when it carries a jti', async () => {
    const assertion = await svid('spiffe://example.org/ns/payments/sa/api', running.issuer, { jti: 'once' });
    expect((await clientCredentials(assertion)).status).toBe(200);
    const replay = await clientCredentials(assertion);
    expect([replay.status, replay.body.error]).toEqual([401, 'invalid_client']);
    expect(running.audit.records.at(-1)).toMatchObject({ reason: 'client_auth: assertion replayed' });
  });

  it('refuses with invalid_client (401, WWW-Authenticate) and says why only in the audit', async () => {
    const refusals: [Promise<string>, Record<string, string>, string][] = [
      // Names the broker, but not only the broker: an SVID meant for several audiences is not a client credential.
      [svid('spiffe://example.org/ns/payments/sa/api', [running.issuer, DOWNSTREAM]), {}, 'client_auth: assertion audience must name only this broker'],
      [svid('spiffe://example.org/ns/payments/sa/api', DOWNSTREAM), {}, 'client_auth: assertion rejected (audience: claim aud)'],
      [svid('spiffe://example.org/ns/payments/sa/api', running.issuer, {}, 3_600), {}, 'client_auth: assertion lifetime too long'],
      [svid('spiffe://other.example/ns/payments/sa/api', running.issuer), {}, 'client_auth: assertion rejected (untrusted_issuer: trust domain not trusted)'],
      [svid('spiffe://example.org/vm/legacy', running.issuer), {}, 'client_auth: no client matches the assertion subject'],
      [svid('spiffe://example.org/ns/payments/sa/api', running.issuer), { client_id: 'spiffe://example.org/ns/payments/sa/other' }, 'client_auth: client_id mismatch'],
    ];
    for (const [assertion, extra, reason] of refusals) {
      const response = await clientCredentials(await assertion, extra);
      expect([response.status, response.body.error], reason).toEqual([401, 'invalid_client']);
      expect(response.headers.get('www-authenticate')).toContain('Basic');
      expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', reason });
    }
  });

  it('refuses patterns whose trust domain is not written out', () => {
    for (const id of ['spiffe://example.org**', 'spiffe://*/ns/payments', 'spiffe://**']) {
      expect(() => validateConfig({ issuer: 'https://broker.example', clients: [{ id, auth: { method: 'spiffe_jwt' } }] }), id).toThrow(/names its trust domain literally/);
    }
  });

  it('gives each SPIFFE ID pattern its own grant types', async () => {
    // Matches only the broader pattern, which may not use client_credentials.
    const response = await clientCredentials(await svid('spiffe://example.org/ns/web/sa/frontend', running.issuer));
    expect([response.status, response.body.error]).toEqual([400, 'unauthorized_client']);
  });
});
