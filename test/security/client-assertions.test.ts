import { randomUUID } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Clock } from '@tessera/plugin-sdk';
import { accessTokenPlugin, API, generateTestKey, postToken, startBroker, TestClient, type RunningBroker } from '../e2e/support.js';
import { expectRefused } from './refusal.js';

/** Catalogue: client assertions. Weakness classes 1 (replay memory vs acceptance window) and 2 (audience). */
const JWT_BEARER_ASSERTION = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const JWT_SPIFFE_ASSERTION = 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe';

/** A clock the test moves; the broker, its replay cache and every verifier read it. */
class ManualClock implements Clock {
  constructor(public ms: number) {}
  now(): Date {
    return new Date(this.ms);
  }
}

const clientCredentials = (endpoint: string, assertionType: string, assertion: string) =>
  postToken(endpoint, { grant_type: 'client_credentials', client_assertion_type: assertionType, client_assertion: assertion, audience: API });

const ccRule = { id: 'cc', match: { grantTypes: ['client_credentials'] }, grant: { audiences: [API], maxLifetimeSeconds: 60 } };

describe('class 1: a single-use proof is remembered as long as any verifier would accept it again', () => {
  it.each([
    [30.5, 35_600],
    // A fraction finer than a millisecond: a Date would drop it and forget the jti a whole second early.
    [30.0004, 35_500],
  ])('private_key_jwt with a fractional exp (t0 + %s s): remembered until JOSE stops accepting it', async (lifetime, replayAfterMs) => {
    const t0 = Math.floor(Date.now() / 1000) * 1000;
    const clock = new ManualClock(t0);
    const client = await TestClient.create('cc-client');
    const running = await startBroker(
      () => ({ clients: [client.config(['client_credentials'])], clientAuth: { clockSkewSeconds: 5 }, plugins: [accessTokenPlugin], policy: { rules: [ccRule] } }),
      { clock },
    );
    try {
      const exp = t0 / 1000 + lifetime;
      const assertion = await new SignJWT({ iss: client.id, sub: client.id, aud: running.tokenEndpoint, jti: randomUUID(), iat: t0 / 1000, exp })
        .setProtectedHeader({ alg: client.key.alg, kid: client.key.kid })
        .sign(client.key.privateKey);
      expect((await clientCredentials(running.tokenEndpoint, JWT_BEARER_ASSERTION, assertion)).status).toBe(200);
      // Past exp + skew by the clock, yet JOSE compares whole seconds and would still accept it.
      clock.ms = t0 + replayAfterMs;
      expectRefused(await clientCredentials(running.tokenEndpoint, JWT_BEARER_ASSERTION, assertion), 401, 'invalid_client', [assertion]);
      expect(running.audit.records.at(-1)).toMatchObject({ reason: 'client_auth: assertion replayed' });
    } finally {
      await running.close();
    }
  });

  it('a JWT-SVID assertion is remembered for the skew of the plugin that verified it, not clientAuth.clockSkewSeconds', async () => {
    const t0 = Math.floor(Date.now() / 1000) * 1000;
    const clock = new ManualClock(t0);
    const key = await generateTestKey('ES256');
    const dir = await mkdtemp(join(tmpdir(), 'tessera-replay-'));
    const { alg: _alg, use: _use, ...jwk } = key.publicJwk;
    await writeFile(join(dir, 'bundle.json'), JSON.stringify({ keys: [{ ...jwk, use: 'jwt-svid' }] }));
    const running = await startBroker(
      () => ({
        clients: [{ id: 'spiffe://example.org/ns/a/sa/*', auth: { method: 'spiffe_jwt' }, grantTypes: ['client_credentials'] }],
        clientAuth: { clockSkewSeconds: 5 },
        plugins: [{ use: '@tessera/plugin-spiffe', config: { clockSkewSeconds: 120, trustDomains: [{ name: 'example.org', bundle: { file: join(dir, 'bundle.json') } }] } }, accessTokenPlugin],
        policy: { rules: [ccRule] },
      }),
      { clock },
    );
    try {
      const svid = await new SignJWT({ sub: 'spiffe://example.org/ns/a/sa/api', aud: running.issuer, jti: randomUUID(), iat: t0 / 1000, exp: t0 / 1000 + 60 })
        .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'JWT' })
        .sign(key.privateKey);
      expect((await clientCredentials(running.tokenEndpoint, JWT_SPIFFE_ASSERTION, svid)).status).toBe(200);
      // 100 s later: 40 s past exp, beyond clientAuth's 5 s skew but inside the plugin's 120 s.
      clock.ms = t0 + 100_000;
      expectRefused(await clientCredentials(running.tokenEndpoint, JWT_SPIFFE_ASSERTION, svid), 401, 'invalid_client', [svid]);
      expect(running.audit.records.at(-1)).toMatchObject({ reason: 'client_auth: assertion replayed' });
    } finally {
      await running.close();
    }
  });
});

describe('class 2: a client assertion names this broker and nobody else (rfc7523bis audience injection)', () => {
  let client: TestClient;
  const brokers: RunningBroker[] = [];
  const start = async (clientAuth: Record<string, unknown> = {}) => {
    const broker = await startBroker(() => ({ clients: [client.config(['client_credentials'])], clientAuth, plugins: [accessTokenPlugin], policy: { rules: [ccRule] } }));
    brokers.push(broker);
    return broker;
  };
  beforeAll(async () => {
    client = await TestClient.create('cc-client');
  });
  afterAll(() => Promise.all(brokers.map((broker) => broker.close())));
  const withAudience = async (broker: RunningBroker, aud: string | string[]) => {
    const assertion = await client.assertion('unused', { aud });
    return { assertion, response: await clientCredentials(broker.tokenEndpoint, JWT_BEARER_ASSERTION, assertion) };
  };

  it('accepts the issuer or the token endpoint, alone or together', async () => {
    const running = await start();
    for (const aud of [running.issuer, running.tokenEndpoint, [running.issuer], [running.issuer, running.tokenEndpoint]]) {
      expect((await withAudience(running, aud)).response.status, JSON.stringify(aud)).toBe(200);
    }
  });

  it('refuses an assertion that also names another party', async () => {
    const running = await start();
    for (const aud of [[running.tokenEndpoint, 'https://other-as.example.test/token'], [running.issuer, 'https://attacker.example.test'], ['https://other-as.example.test']]) {
      const { assertion, response } = await withAudience(running, aud);
      expectRefused(response, 401, 'invalid_client', [assertion]);
      expect(response.headers.get('www-authenticate')).toBeTruthy();
    }
  });

  it('with assertionAudience: issuer, only the issuer identifier (the draft rule)', async () => {
    const strict = await start({ assertionAudience: 'issuer' });
    expect((await withAudience(strict, strict.issuer)).response.status).toBe(200);
    for (const aud of [strict.tokenEndpoint, [strict.issuer, strict.tokenEndpoint]]) {
      const { assertion, response } = await withAudience(strict, aud);
      expectRefused(response, 401, 'invalid_client', [assertion]);
    }
  });
});
