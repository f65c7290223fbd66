import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { ConfigError, createBroker, MemoryAuditSink, silentLogger, validateConfig } from '@tessera/core';
import { ID_TOKEN, LoopbackIssuer, startBroker, type RunningBroker, JWT_SVID } from './support.js';

async function postJson(url: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: response.status, headers: response.headers, body: (await response.json()) as Record<string, unknown> };
}

describe('SPIFFE exchange door', () => {
  let idp: LoopbackIssuer;
  let running: RunningBroker;
  let door: string;

  beforeAll(async () => {
    idp = await LoopbackIssuer.start();
    running = await startBroker(
      () => ({
        clients: [{ id: 'spiffe-exchange', auth: { method: 'none' } }],
        plugins: [
          { use: '@tessera/plugin-oidc', config: { tokenTypes: ['urn:ietf:params:oauth:token-type:jwt', ID_TOKEN], issuers: [{ issuer: idp.issuer, allowedAudiences: ['https://also-accepted.example.test'] }] } },
          { use: './fixtures/fixed-svid-issuer.mjs' },
        ],
        endpoints: { spiffeExchange: { enabled: true, publicClient: 'spiffe-exchange' } },
        policy: {
          rules: [
            {
              id: 'idp-users-to-svid',
              match: { clients: ['spiffe-exchange'], issuers: [idp.issuer], requestedTokenTypes: [JWT_SVID] },
              grant: { audiences: ['spiffe://example.org/**', 'https://db.example.test'], issuerParameters: { spiffeId: 'spiffe://example.org/user/{subject}' } },
            },
          ],
        },
      }),
      { baseDir: import.meta.dirname },
    );
    door = `${running.issuer}/spiffe/exchange`;
  });
  afterAll(async () => {
    await running?.close();
    await idp?.close();
  });

  it('exchanges a JWT for a JWT-SVID named by policy, through the same pipeline and audit', async () => {
    const response = await postJson(door, { token: await idp.mint({ sub: 'ada', aud: running.issuer }), audience: ['https://db.example.test'] });
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(Object.keys(response.body).sort()).toEqual(['expires_at', 'jwt_svid', 'spiffe_id']);
    expect(response.body.spiffe_id).toBe('spiffe://example.org/user/ada');
    const svid = decodeJwt(response.body.jwt_svid as string);
    expect(svid).toMatchObject({ sub: 'spiffe://example.org/user/ada', aud: ['https://db.example.test'] });
    expect(response.body.expires_at).toBe(svid.exp);
    expect(running.audit.records.at(-1)).toMatchObject({
      endpoint: 'spiffe-exchange',
      decision: 'allow',
      client: { id: 'spiffe-exchange', authMethod: 'none' },
      subject: { subject: 'ada' },
      ruleId: 'idp-users-to-svid',
      issued: { tokenType: JWT_SVID },
    });
  });

  it('accepts only tokens addressed to the broker itself, ignoring allowedAudiences', async () => {
    const elsewhere = await idp.mint({ sub: 'ada', aud: 'https://also-accepted.example.test' });
    const response = await postJson(door, { token: elsewhere, audience: ['https://db.example.test'] });
    expect([response.status, response.body.error]).toEqual([400, 'invalid_request']);
    expect(running.audit.records.at(-1)).toMatchObject({ endpoint: 'spiffe-exchange', reason: 'subject: audience: claim aud' });
    // The same token is fine at /token, where the issuer's allowedAudiences apply.
    const oauth = await fetch(running.tokenEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        client_id: 'spiffe-exchange',
        subject_token: elsewhere,
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        requested_token_type: JWT_SVID,
        audience: 'https://db.example.test',
      }),
    });
    expect(oauth.status).toBe(200);
  });

  it('answers errors as JSON with the same codes', async () => {
    const cases: [unknown, number, string][] = [
      [{ audience: ['https://db.example.test'] }, 400, 'invalid_request'],
      [{ token: 'not-a-jwt', audience: ['https://db.example.test'] }, 400, 'invalid_request'],
      [{ token: await idp.mint({ sub: 'ada', aud: running.issuer }), audience: ['https://elsewhere.example.test'] }, 400, 'invalid_target'],
      [{ token: await idp.mint({ sub: 'ada', aud: running.issuer }), audience: 'https://db.example.test', client_id: 'unknown' }, 401, 'invalid_client'],
      [{ token: 42 }, 400, 'invalid_request'],
      // Members the door cannot honour are refused, never dropped (an actor would be lost silently).
      [{ token: await idp.mint({ sub: 'ada', aud: running.issuer }), audience: ['https://db.example.test'], actor_token: 'x' }, 400, 'invalid_request'],
    ];
    for (const [body, status, error] of cases) {
      const response = await postJson(door, body);
      expect([response.status, response.body.error], JSON.stringify(body).slice(0, 60)).toEqual([status, error]);
      expect(typeof response.body.error_description).toBe('string');
    }
  });

  it('refuses to start when no issuer handles JWT-SVIDs or the public client is not public', async () => {
    const base = { issuer: 'http://127.0.0.1:9', keys: { generate: true }, dataDir: running.broker.config.dataDir };
    const noIssuer = validateConfig({ ...base, endpoints: { spiffeExchange: { enabled: true } } });
    await expect(createBroker(noIssuer, { logger: silentLogger, audit: new MemoryAuditSink() })).rejects.toThrow(/no issuer plugin handles urn:tessera:token-type:jwt-svid/);
    const notPublic = validateConfig({ ...base, plugins: [{ use: './fixtures/fixed-svid-issuer.mjs' }], endpoints: { spiffeExchange: { enabled: true, publicClient: 'ghost' } } });
    const error = await createBroker(notPublic, { baseDir: import.meta.dirname, logger: silentLogger, audit: new MemoryAuditSink() }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).message).toContain('"ghost" is not a configured client with auth method none');
  });
});
