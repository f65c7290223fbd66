import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose';
import { createBroker, MemoryAuditSink, silentLogger, validateConfig } from '@tessera/core';
import { DelegatedIdentityClient, parseSelector } from '@tessera/spiffe';
import { accessTokenPlugin, LoopbackIssuer, postToken, startBroker, TOKEN_EXCHANGE, type RunningBroker, JWT_SVID, JWT_SPIFFE } from '../e2e/support.js';
import { spireRequired, spireUnavailableReason, startSpire, waitForDelegatedEntry, type Spire } from '../src/spire.js';

const PAYMENTS_API = 'spiffe://example.org/ns/payments/sa/api';
const PAYMENTS_SELECTORS = ['k8s:ns:payments', 'k8s:sa:api'];
const unavailable = spireUnavailableReason();


describe('SPIFFE and SPIRE, for real', () => {
  let spire: Spire;
  let idp: LoopbackIssuer;
  let running: RunningBroker;

  beforeAll(async () => {
    if (unavailable) return;
    [spire, idp] = await Promise.all([startSpire(), LoopbackIssuer.start()]);
    await spire.createEntry(PAYMENTS_API, PAYMENTS_SELECTORS);
    await waitForDelegatedEntry(spire.adminSocket, PAYMENTS_SELECTORS);
    running = await startBroker(() => ({
      clients: [
        { id: 'spiffe://example.org/**', auth: { method: 'spiffe_jwt' }, grantTypes: ['client_credentials', 'token_exchange'] },
        { id: 'k8s-workloads', auth: { method: 'none' } },
      ],
      plugins: [
        // Bundles streamed live from the agent's Workload API.
        { use: '@tessera/plugin-spiffe', config: { trustDomains: [{ name: 'example.org', bundle: { workloadApi: true } }], workloadApi: { address: `unix://${spire.workloadSocket}` } } },
        { use: '@tessera/plugin-oidc', config: { tokenTypes: ['urn:ietf:params:oauth:token-type:jwt'], issuers: [{ issuer: idp.issuer, attributes: { 'k8s.namespace': 'namespace', 'k8s.serviceAccount': 'serviceaccount' } }] } },
        { use: '@tessera/plugin-spire-jwt-svid', config: { adminSocket: `unix://${spire.adminSocket}` } },
        accessTokenPlugin,
      ],
      endpoints: { spiffeExchange: { enabled: true, publicClient: 'k8s-workloads' } },
      policy: {
        rules: [
          {
            id: 'workloads-to-oauth',
            match: { clients: ['spiffe://example.org/**'], attributes: { 'spiffe.trustDomain': 'example.org' } },
            grant: { audiences: ['https://payments.example.test'], scopes: ['payments.read'], maxLifetimeSeconds: 600 },
          },
          {
            id: 'k8s-to-spiffe',
            match: { issuers: [idp.issuer], requestedTokenTypes: [JWT_SVID] },
            grant: {
              audiences: ['spiffe://example.org/**'],
              maxLifetimeSeconds: 600,
              allowLifetimeBeyondSubject: true,
              issuerParameters: { selectors: ['k8s:ns:{attributes.k8s.namespace}', 'k8s:sa:{attributes.k8s.serviceAccount}'] },
            },
          },
        ],
      },
    }));
  }, 180_000);

  afterAll(async () => {
    await running?.close();
    await Promise.all([spire?.stop(), idp?.close()]);
  }, 60_000);

  beforeEach((ctx) => {
    if (unavailable && spireRequired()) throw new Error(`TESSERA_REQUIRE_SPIRE=1 but ${unavailable}`);
    if (unavailable) ctx.skip(unavailable);
  });

  it('exchanges a SPIRE-issued JWT-SVID for an access token (bundles from the Workload API)', async () => {
    const svid = await spire.fetchJwtSvid(running.issuer);
    const response = await postToken(running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      client_assertion_type: JWT_SPIFFE,
      client_assertion: svid,
      subject_token: svid,
      subject_token_type: JWT_SVID,
      audience: 'https://payments.example.test',
      scope: 'payments.read',
    });
    expect(response.status, response.text).toBe(200);
    expect(decodeJwt(response.body.access_token as string)).toMatchObject({ sub: spire.brokerId, aud: 'https://payments.example.test', scope: 'payments.read' });
  });

  it('authenticates a workload by its SPIRE JWT-SVID alone (client_credentials, the SPIFFE→OAuth bridge)', async () => {
    const response = await postToken(running.tokenEndpoint, {
      grant_type: 'client_credentials',
      client_assertion_type: JWT_SPIFFE,
      client_assertion: await spire.fetchJwtSvid(running.issuer),
      audience: 'https://payments.example.test',
    });
    expect(response.status, response.text).toBe(200);
    expect(running.audit.records.at(-1)).toMatchObject({ client: { id: spire.brokerId, authMethod: 'spiffe_jwt' }, subject: { issuer: 'spiffe://example.org' } });
  });

  it('turns a Kubernetes-style identity into a JWT-SVID that SPIRE mints, at the SPIFFE exchange door', async () => {
    const token = await idp.mint({ sub: 'system:serviceaccount:payments:api', aud: running.issuer, namespace: 'payments', serviceaccount: 'api' });
    const response = await fetch(`${running.issuer}/spiffe/exchange`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token, audience: ['spiffe://example.org/db'] }),
    });
    const body = (await response.json()) as Record<string, unknown>;
    expect(response.status, JSON.stringify(body)).toBe(200);
    expect(body.spiffe_id).toBe(PAYMENTS_API);
    // Signed by SPIRE, not by Tessera: it verifies with the trust domain's bundle.
    const { payload } = await jwtVerify(body.jwt_svid as string, createLocalJWKSet(await spire.bundleJwks()), { audience: 'spiffe://example.org/db' });
    expect(payload.sub).toBe(PAYMENTS_API);
    expect(body.expires_at).toBe(payload.exp);
    expect(running.audit.records.at(-1)).toMatchObject({ endpoint: 'spiffe-exchange', ruleId: 'k8s-to-spiffe', issued: { tokenType: JWT_SVID, subject: PAYMENTS_API } });
  });

  it('answers requested_token_type JWT-SVID at /token with token_type N_A', async () => {
    const response = await postToken(running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      client_id: 'k8s-workloads',
      subject_token: await idp.mint({ sub: 'system:serviceaccount:payments:api', aud: running.issuer, namespace: 'payments', serviceaccount: 'api' }),
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      requested_token_type: JWT_SVID,
      audience: 'spiffe://example.org/db',
    });
    expect(response.status, response.text).toBe(200);
    expect(response.body).toMatchObject({ issued_token_type: JWT_SVID, token_type: 'N_A' });
    expect(decodeJwt(response.body.access_token as string).sub).toBe(PAYMENTS_API);
  });

  it('refuses an identity that maps to no registration entry, with 400', async () => {
    const token = await idp.mint({ sub: 'system:serviceaccount:web:frontend', aud: running.issuer, namespace: 'web', serviceaccount: 'frontend' });
    const response = await fetch(`${running.issuer}/spiffe/exchange`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token, audience: ['spiffe://example.org/db'] }) });
    expect(response.status).toBe(400);
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', reason: 'spire: no registration entry matches the selectors' });
  });

  it('answers 503 with Retry-After while the agent is down, and recovers when it returns', async () => {
    const request = async () =>
      fetch(`${running.issuer}/spiffe/exchange`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token: await idp.mint({ sub: 'system:serviceaccount:payments:api', aud: running.issuer, namespace: 'payments', serviceaccount: 'api' }), audience: ['spiffe://example.org/db'] }),
      });
    await spire.stopAgent();
    try {
      const down = await request();
      expect(down.status).toBe(503);
      expect(Number(down.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(((await down.json()) as { error: string }).error).toBe('temporarily_unavailable');
    } finally {
      await spire.startAgent();
    }
    // The re-attested agent syncs its entries again; the broker reconnects by itself.
    await waitForDelegatedEntry(spire.adminSocket, PAYMENTS_SELECTORS);
    expect((await request()).status).toBe(200);
  }, 120_000);

  it('answers 503 with Retry-After when the agent is unreachable', async () => {
    const dark = await startBroker(() => ({
      clients: [{ id: 'k8s-workloads', auth: { method: 'none' } }],
      plugins: [
        { use: '@tessera/plugin-oidc', config: { tokenTypes: ['urn:ietf:params:oauth:token-type:jwt'], issuers: [{ issuer: idp.issuer }] } },
        { use: '@tessera/plugin-spire-jwt-svid', config: { adminSocket: `unix://${spire.dir}/no-such-agent.sock`, timeoutMs: 1_000 } },
      ],
      policy: { rules: [{ id: 'r', grant: { audiences: ['spiffe://example.org/**'], maxLifetimeSeconds: 600, allowLifetimeBeyondSubject: true, issuerParameters: { selectors: ['k8s:ns:payments'] } } }] },
    }));
    try {
      const response = await postToken(dark.tokenEndpoint, {
        grant_type: TOKEN_EXCHANGE,
        client_id: 'k8s-workloads',
        subject_token: await idp.mint({ sub: 'x', aud: dark.issuer }),
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        requested_token_type: JWT_SVID,
        audience: 'spiffe://example.org/db',
      });
      expect([response.status, response.body.error]).toEqual([503, 'temporarily_unavailable']);
      expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
    } finally {
      await dark.close();
    }
  });
});

describe('JWT-SVIDs from another SPIRE trust domain', () => {
  let ours: Spire | undefined;
  let theirs: Spire | undefined;
  let running: RunningBroker | undefined;
  beforeAll(async () => {
    if (unavailable) return;
    [ours, theirs] = await Promise.all([startSpire(), startSpire({ trustDomain: 'partner.test' })]);
    running = await startBroker(() => ({
      clients: [{ id: 'spiffe://example.org/**', auth: { method: 'spiffe_jwt' }, grantTypes: ['client_credentials', 'token_exchange'] }, { id: 'public', auth: { method: 'none' } }],
      plugins: [
        { use: '@tessera/plugin-spiffe', config: { trustDomains: [{ name: 'example.org', bundle: { workloadApi: true } }], workloadApi: { address: `unix://${ours!.workloadSocket}` } } },
        accessTokenPlugin,
      ],
      policy: { rules: [{ id: 'any', grant: { audiences: ['https://payments.example.test'] } }] },
    }));
  }, 180_000);
  afterAll(async () => {
    await running?.close();
    await Promise.all([ours?.stop(), theirs?.stop()]);
  }, 60_000);
  beforeEach((ctx) => {
    if (unavailable && spireRequired()) throw new Error(`TESSERA_REQUIRE_SPIRE=1 but ${unavailable}`);
    if (unavailable) ctx.skip(unavailable);
  });

  it('refuses them as subject (invalid_request) and as client credential (invalid_client)', async () => {
    const foreign = await theirs!.fetchJwtSvid(running!.issuer);
    const asSubject = await postToken(running!.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      client_id: 'public',
      subject_token: foreign,
      subject_token_type: JWT_SVID,
      audience: 'https://payments.example.test',
    });
    expect([asSubject.status, asSubject.body.error]).toEqual([400, 'invalid_request']);
    expect(running!.audit.records.at(-1)).toMatchObject({ reason: 'subject: untrusted_issuer: trust domain not trusted' });
    const asClient = await postToken(running!.tokenEndpoint, { grant_type: 'client_credentials', client_assertion_type: JWT_SPIFFE, client_assertion: foreign, audience: 'https://payments.example.test' });
    expect([asClient.status, asClient.body.error]).toEqual([401, 'invalid_client']);
    // Our own domain's SVID still works.
    const ours_ = await postToken(running!.tokenEndpoint, { grant_type: 'client_credentials', client_assertion_type: JWT_SPIFFE, client_assertion: await ours!.fetchJwtSvid(running!.issuer), audience: 'https://payments.example.test' });
    expect(ours_.status).toBe(200);
  });
});

describe('SPIRE refuses Tessera as a delegate', () => {
  let spire: Spire | undefined;
  beforeAll(async () => {
    if (unavailable) return;
    spire = await startSpire({ authorizedDelegates: ['spiffe://example.org/someone-else'] });
  }, 180_000);
  afterAll(() => spire?.stop(), 60_000);
  beforeEach((ctx) => {
    if (unavailable && spireRequired()) throw new Error(`TESSERA_REQUIRE_SPIRE=1 but ${unavailable}`);
    if (unavailable) ctx.skip(unavailable);
  });

  it('stops startup with a message naming the agent setting to fix', async () => {
    const config = validateConfig({
      issuer: 'http://127.0.0.1:9',
      keys: { generate: true },
      dataDir: `${spire!.dir}/tessera`,
      plugins: [{ use: '@tessera/plugin-spire-jwt-svid', config: { adminSocket: `unix://${spire!.adminSocket}` } }],
    });
    await expect(createBroker(config, { logger: silentLogger, audit: new MemoryAuditSink() })).rejects.toThrow(/authorized_delegates/);
  });
});
