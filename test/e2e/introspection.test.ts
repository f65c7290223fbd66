import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt, SignJWT, type JWTPayload } from 'jose';
import { createBroker, ConfigError, silentLogger, validateConfig } from '@tessera/core';
import type { TestKey } from '@tessera/plugin-testkit';
import {
  ACCESS_TOKEN,
  accessTokenPlugin,
  API,
  ASSERTION_TYPE,
  generateTestKey,
  ID_TOKEN,
  JWT,
  LoopbackIssuer,
  oidcPlugin,
  postToken,
  startBroker,
  TestClient,
  TOKEN_EXCHANGE,
  type RunningBroker,
  type TokenCall,
  JWT_SVID,
  JWT_SPIFFE,
} from './support.js';

const TD = 'spiffe://prod.test';
const AGENT = `${TD}/agent`;
const MCP = `${TD}/mcp`;
const DOWNSTREAM = `${TD}/files-api`;

/**
 * RFC 7662 over loopback. Workloads (JWT-SVID clients) build a two-actor delegation chain as in
 * delegation-chain.test.ts; `app` gets plain impersonation tokens; `rs` is a resource server listed in
 * endpoints.introspection.clients; `other` is an authenticated client with no claim on any of the tokens.
 */
describe('token introspection', () => {
  let idp: LoopbackIssuer;
  let trustDomainKey: TestKey;
  let app: TestClient;
  let rs: TestClient;
  let other: TestClient;
  let running: RunningBroker;
  let disabled: RunningBroker;
  let introspectUrl = '';
  /** The broker's clock runs this far ahead of the real one; every credential below is minted on it. */
  let offsetMs = 0;
  const clock = { now: () => new Date(Date.now() + offsetMs) };
  const nowSeconds = () => Math.floor(clock.now().getTime() / 1000);

  beforeAll(async () => {
    idp = await LoopbackIssuer.start();
    trustDomainKey = await generateTestKey('ES256');
    [app, rs, other] = await Promise.all([TestClient.create('app'), TestClient.create('rs'), TestClient.create('other')]);
    const dir = await mkdtemp(join(tmpdir(), 'tessera-introspection-'));
    const { alg: _alg, use: _use, ...jwk } = trustDomainKey.publicJwk;
    await writeFile(join(dir, 'bundle.json'), JSON.stringify({ keys: [{ ...jwk, use: 'jwt-svid' }] }));
    const build = (issuer: string) => ({
      clients: [
        { id: `${TD}/*`, auth: { method: 'spiffe_jwt' }, grantTypes: ['token_exchange'] },
        app.config(['token_exchange']),
        rs.config(['token_exchange']),
        other.config(['token_exchange']),
        { id: 'public', auth: { method: 'none' } },
      ],
      delegation: { maxChainDepth: 2 },
      endpoints: { introspection: { clients: ['rs'] } },
      plugins: [
        oidcPlugin({ issuer: idp.issuer, jwksUri: idp.jwksUri }),
        { use: '@tessera/plugin-spiffe', config: { trustDomains: [{ name: 'prod.test', bundle: { file: join(dir, 'bundle.json') } }] } },
        accessTokenPlugin,
      ],
      policy: {
        rules: [
          {
            id: 'agent-acts-for-users',
            match: { issuers: [idp.issuer], clients: [AGENT], actor: { trust: ['workload'], subjects: [AGENT] } },
            grant: { audiences: [MCP], scopes: ['tools:read', 'tools:write'], maxLifetimeSeconds: 600, delegation: { allowed: true }, claims: { copy: ['email'] } },
          },
          {
            id: 'mcp-calls-files-api',
            match: { issuers: [issuer], subjectTokenTypes: [ACCESS_TOKEN], clients: [MCP], actor: { subjects: [MCP], priorActors: [AGENT] } },
            grant: { audiences: [DOWNSTREAM], scopes: ['tools:read', 'tools:write'], maxLifetimeSeconds: 600, delegation: { allowed: true }, claims: { copy: ['email'] } },
          },
          { id: 'app-to-api', match: { issuers: [idp.issuer], clients: ['app'] }, grant: { audiences: [API], scopes: ['read'], maxLifetimeSeconds: 300 } },
        ],
      },
    });
    running = await startBroker(build, { clock });
    disabled = await startBroker((issuer) => ({ ...build(issuer), endpoints: { introspection: { enabled: false } } }));
    introspectUrl = `${running.issuer}/introspect`;
  });
  afterEach(() => {
    offsetMs = 0;
  });
  afterAll(async () => {
    await running?.close();
    await disabled?.close();
    await idp?.close();
  });

  const svid = (spiffeId: string) =>
    new SignJWT({ sub: spiffeId, aud: running.issuer, iat: nowSeconds(), exp: nowSeconds() + 300 })
      .setProtectedHeader({ alg: 'ES256', kid: trustDomainKey.kid, typ: 'JWT' })
      .sign(trustDomainKey.privateKey);
  /** Form fields authenticating a client on the broker's clock: a private_key_jwt client or a workload. */
  const as = async (client: TestClient | string): Promise<Record<string, string>> =>
    typeof client === 'string'
      ? { client_assertion_type: JWT_SPIFFE, client_assertion: await svid(client) }
      : { client_assertion_type: ASSERTION_TYPE, client_assertion: await client.assertion(running.issuer, { iat: nowSeconds(), exp: nowSeconds() + 60 }) };
  /** POST /introspect as `client` (null: no credentials). */
  const introspect = async (fields: Record<string, string>, client: TestClient | string | null = rs, headers: Record<string, string> = {}) =>
    postToken(introspectUrl, { ...fields, ...(client ? await as(client) : {}) }, { headers });

  const exchanged = (response: TokenCall) => {
    expect(response.status, response.text).toBe(200);
    return response.body.access_token as string;
  };
  /** alice → agent (acting) → MCP server (acting) → a token for the files API, with a two-actor chain. */
  const delegatedToken = async () => {
    const user = await idp.mint({ sub: 'alice', aud: running.issuer, email: 'alice@example.test', scope: 'tools:read tools:write' }, { expiresIn: 900 });
    const toMcp = exchanged(
      await postToken(running.tokenEndpoint, {
        grant_type: TOKEN_EXCHANGE,
        subject_token: user,
        subject_token_type: JWT,
        actor_token: await svid(AGENT),
        actor_token_type: JWT_SVID,
        audience: MCP,
        scope: 'tools:read tools:write',
        ...(await as(AGENT)),
      }),
    );
    return exchanged(
      await postToken(running.tokenEndpoint, {
        grant_type: TOKEN_EXCHANGE,
        subject_token: toMcp,
        subject_token_type: ACCESS_TOKEN,
        actor_token: await svid(MCP),
        actor_token_type: JWT_SVID,
        audience: DOWNSTREAM,
        scope: 'tools:read',
        ...(await as(MCP)),
      }),
    );
  };
  /** A broker token for the API, issued to `app` (impersonation). */
  const appToken = async () =>
    exchanged(
      await postToken(running.tokenEndpoint, {
        grant_type: TOKEN_EXCHANGE,
        subject_token: await idp.mint({ sub: 'alice', aud: running.issuer }),
        subject_token_type: ID_TOKEN,
        audience: API,
        scope: 'read',
        ...(await as(app)),
      }),
    );

  /** Nothing of the token (its payload, where most of it is) appears in `text`. */
  const expectNoEcho = (text: string, token: string) => expect(text).not.toContain((token.split('.')[1] ?? token).slice(0, 16));
  const expectAnswer = (response: TokenCall, token: string) => {
    expect(response.status, response.text).toBe(200);
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(response.headers.get('pragma')).toBe('no-cache');
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    expectNoEcho(response.text, token);
  };
  /** RFC 7662 §2.2: exactly `{"active": false}`, whatever the reason. */
  const expectInactive = (response: TokenCall, token: string) => {
    expectAnswer(response, token);
    expect(response.text).toBe('{"active":false}');
  };
  const expectError = (response: TokenCall, status: number, error: string, token?: string) => {
    expect([response.status, response.body.error], response.text).toEqual([status, error]);
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(response.body).not.toHaveProperty('active');
    if (token) expectNoEcho(response.text, token);
  };

  it('describes an active delegated token with its exact claims and the nested act chain', async () => {
    const token = await delegatedToken();
    const claims = decodeJwt(token);
    const before = running.audit.introspections.length;
    const response = await introspect({ token, token_type_hint: 'access_token' });
    expectAnswer(response, token);
    expect(response.body).toEqual({
      active: true,
      scope: 'tools:read',
      client_id: MCP,
      sub: 'alice',
      aud: DOWNSTREAM,
      iss: running.issuer,
      exp: claims.exp,
      iat: claims.iat,
      jti: claims.jti,
      token_type: 'Bearer',
      act: { sub: MCP, iss: TD, spiffe_id: MCP, act: { sub: AGENT, iss: TD, spiffe_id: AGENT } },
    });
    expect(claims.exp! - claims.iat!).toBeGreaterThan(0);
    expect(running.audit.introspections.slice(before)).toEqual([
      {
        event: 'introspect',
        decision: 'allow',
        requestId: expect.any(String),
        client: { id: 'rs', authMethod: 'private_key_jwt' },
        active: true,
        jti: claims.jti,
        tokenTypeHint: 'access_token',
        latencyMs: expect.any(Number),
      },
    ]);
    expectNoEcho(JSON.stringify(running.audit.introspections), token);
  });

  it('shows a token to its audience and the client it was issued to, and to nobody else unlisted', async () => {
    const token = await delegatedToken();
    for (const caller of [DOWNSTREAM, MCP]) {
      const response = await introspect({ token }, caller);
      expectAnswer(response, token);
      expect(response.body).toMatchObject({ active: true, client_id: MCP, aud: DOWNSTREAM });
    }
    // The agent acted earlier in the chain, but the token is neither for it nor issued to it.
    for (const caller of [AGENT, other]) expectInactive(await introspect({ token }, caller), token);
    expect(running.audit.introspections.at(-1)).toMatchObject({ decision: 'allow', active: false, reason: 'not visible to this client', client: { id: 'other' } });
  });

  it('reports a token inactive once it is revoked', async () => {
    const token = await appToken();
    expect((await introspect({ token })).body).toMatchObject({ active: true, client_id: 'app', aud: API, scope: 'read' });
    const revoked = await postToken(`${running.issuer}/revoke`, { token, ...(await as(app)) });
    expect(revoked.status, revoked.text).toBe(200);
    expectInactive(await introspect({ token }), token);
    expectInactive(await introspect({ token }, app), token);
    expect(running.audit.introspections.at(-1)).toMatchObject({ decision: 'allow', active: false, reason: 'revoked', jti: decodeJwt(token).jti });
  });

  it('reports a token inactive from the second it expires, with no grace period', async () => {
    const token = await appToken();
    const { exp } = decodeJwt(token);
    const issuedAt = Date.now();
    offsetMs = (exp! - 1) * 1000 - issuedAt;
    expect((await introspect({ token })).body).toMatchObject({ active: true, exp });
    offsetMs = exp! * 1000 - issuedAt;
    expectInactive(await introspect({ token }), token);
    expect(running.audit.introspections.at(-1)).toMatchObject({ active: false, reason: 'expired' });
  });

  it('reports foreign tokens inactive: another key under the same issuer, another issuer', async () => {
    const { keys } = (await (await fetch(`${running.issuer}/keys`)).json()) as { keys: { kid: string; alg: string }[] };
    const foreign = await generateTestKey(keys[0]!.alg);
    const now = nowSeconds();
    const claims: JWTPayload = { iss: running.issuer, sub: 'alice', aud: 'rs', iat: now, exp: now + 300, jti: 'forged', client_id: 'rs', scope: 'admin' };
    // Even the broker's own kid: the key, not the header, decides.
    const forged = await new SignJWT(claims).setProtectedHeader({ alg: foreign.alg, kid: keys[0]!.kid, typ: 'at+jwt' }).sign(foreign.privateKey);
    const idToken = await idp.mint({ sub: 'alice', aud: 'rs', client_id: 'rs' });
    for (const token of [forged, idToken]) expectInactive(await introspect({ token }), token);
    expect(running.audit.introspections.slice(-2).map((record) => [record.active, record.jti])).toEqual([
      [false, undefined],
      [false, undefined],
    ]);
  });

  it('reports garbage inactive and accepts any well-formed token_type_hint', async () => {
    for (const token of ['definitely-not-a-token', 'a.b.c', `eyJhbGciOiJub25lIn0.${Buffer.from('{"iss":"x"}').toString('base64url')}.`, 'x'.repeat(9_000)]) {
      expectInactive(await introspect({ token, token_type_hint: 'refresh_token' }), token);
    }
    const token = await appToken();
    const response = await introspect({ token, token_type_hint: 'urn:example:custom-hint' });
    expect(response.body).toMatchObject({ active: true });
    expect(running.audit.introspections.at(-1)).not.toHaveProperty('tokenTypeHint');
  });

  it('refuses a request without a token or with a malformed hint, with 400 invalid_request', async () => {
    expectError(await introspect({ token_type_hint: 'access_token' }), 400, 'invalid_request');
    expect(running.audit.introspections.at(-1)).toMatchObject({ decision: 'deny', error: 'invalid_request', reason: 'introspection: missing token' });
    const token = await appToken();
    expectError(await introspect({ token, token_type_hint: 'access token' }), 400, 'invalid_request', token);
  });

  it('refuses unauthenticated and public clients with 401 invalid_client and a challenge', async () => {
    const token = await appToken();
    for (const response of [
      await introspect({ token }, null),
      await introspect({ token, client_id: 'public' }, null),
      await introspect({ token, client_id: 'app' }, null),
      await introspect({ token }, null, { authorization: `Basic ${Buffer.from('rs:guess').toString('base64')}` }),
    ]) {
      expectError(response, 401, 'invalid_client', token);
      expect(response.headers.get('www-authenticate')).toBe('Basic realm="tessera"');
    }
    expect(running.audit.introspections.slice(-4).map((record) => [record.decision, record.error])).toEqual(Array(4).fill(['deny', 'invalid_client']));
  });

  it('keeps the token endpoint transport rules: POST, form only, no repeated parameters, size cap', async () => {
    expect((await fetch(introspectUrl)).status).toBe(405);
    const json = await fetch(introspectUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"token":"x"}' });
    expect([json.status, ((await json.json()) as { error: string }).error]).toEqual([415, 'invalid_request']);
    const form = new URLSearchParams(await as(rs));
    form.append('token', 'one');
    form.append('token', 'two');
    const repeated = await fetch(introspectUrl, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form });
    expect([repeated.status, ((await repeated.json()) as { error: string }).error]).toEqual([400, 'invalid_request']);
    expect((await postToken(introspectUrl, { token: 'x'.repeat(70_000) })).status).toBe(413);
  });

  it('publishes the endpoint in RFC 8414 metadata only when enabled', async () => {
    const metadata = (await (await fetch(`${running.issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    expect(metadata).toMatchObject({
      introspection_endpoint: introspectUrl,
      introspection_endpoint_auth_signing_alg_values_supported: expect.arrayContaining(['ES256']),
      token_endpoint_auth_methods_supported: expect.arrayContaining(['none']),
    });
    expect([...(metadata.introspection_endpoint_auth_methods_supported as string[])].sort()).toEqual(['private_key_jwt', 'spiffe_jwt']);
    const off = (await (await fetch(`${disabled.issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    expect(off).not.toHaveProperty('introspection_endpoint');
    expect(off).not.toHaveProperty('introspection_endpoint_auth_methods_supported');
    expect(off).toHaveProperty('revocation_endpoint');
    expect((await postToken(`${disabled.issuer}/introspect`, { token: 'x' })).status).toBe(404);
  });

  it('stops startup when endpoints.introspection.clients names no authenticating client', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tessera-introspection-config-'));
    const config = validateConfig({
      issuer: 'http://127.0.0.1:1',
      dataDir,
      keys: { generate: true },
      network: { allowLoopbackHttp: true },
      clients: [rs.config(['token_exchange']), { id: 'public', auth: { method: 'none' } }],
      endpoints: { introspection: { clients: ['rs', 'public', 'missing'] } },
    });
    const failed = await createBroker(config, { logger: silentLogger }).then(
      async (broker) => {
        await broker.close();
        return undefined;
      },
      (error: unknown) => error,
    );
    expect(failed).toBeInstanceOf(ConfigError);
    expect((failed as ConfigError).message).toMatch(/endpoints\.introspection\.clients\[1\]: "public"/);
    expect((failed as ConfigError).message).toMatch(/endpoints\.introspection\.clients\[2\]: "missing"/);
    expect((failed as ConfigError).message).not.toMatch(/clients\[0\]/);
  });
});
