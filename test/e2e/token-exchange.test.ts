import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashClientSecret } from '@tessera/core';
import {
  accessTokenPlugin,
  ACCESS_TOKEN,
  allowRule,
  API,
  ID_TOKEN,
  JWT,
  JWT_BEARER,
  LoopbackIssuer,
  oidcPlugin,
  postToken,
  startBroker,
  TestClient,
  TOKEN_EXCHANGE,
  type RunningBroker,
} from './support.js';

const SECRET = 'correct horse battery staple, long enough';

describe('token exchange end to end', () => {
  let idp: LoopbackIssuer;
  let client: TestClient;
  let running: RunningBroker;

  beforeAll(async () => {
    idp = await LoopbackIssuer.start();
    client = await TestClient.create('workload-a');
    const secretHash = await hashClientSecret(SECRET);
    running = await startBroker((issuer) => ({
      clients: [
        client.config(),
        { id: 'basic-client', auth: { method: 'client_secret_basic', secretHash }, grantTypes: ['token_exchange', 'client_credentials'] },
        { id: 'post-client', auth: { method: 'client_secret_post', secretHash } },
      ],
      plugins: [oidcPlugin({ issuer: idp.issuer }), accessTokenPlugin],
      policy: {
        rules: [
          allowRule(idp.issuer),
          {
            id: 'workload-self',
            match: { clients: ['workload-a'], grantTypes: ['client_credentials'] },
            grant: { audiences: [API], scopes: ['read'], maxLifetimeSeconds: 120 },
          },
        ],
      },
    }));
  });
  afterAll(async () => {
    await running.close();
    await idp.close();
  });

  it('exchanges an ID token for an RFC 9068 access token that verifies through the RFC 8414 metadata', async () => {
    const subjectToken = await idp.mint({ sub: 'alice', aud: running.issuer }, { expiresIn: 3600 });
    const call = await postToken(running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: subjectToken,
      subject_token_type: ID_TOKEN,
      requested_token_type: ACCESS_TOKEN,
      audience: API,
      scope: 'read write',
      ...(await client.auth(running.tokenEndpoint)),
    });
    expect(call.status).toBe(200);
    expect(call.headers.get('cache-control')).toBe('no-store');
    expect(call.headers.get('pragma')).toBe('no-cache');
    expect(call.headers.get('content-type')).toMatch(/^application\/json/);
    expect(call.body).toMatchObject({ issued_token_type: ACCESS_TOKEN, token_type: 'Bearer', expires_in: 600, scope: 'read write' });

    const metadata = (await (await fetch(`${running.issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, string>;
    expect(metadata.issuer).toBe(running.issuer);
    const token = call.body.access_token as string;
    const { payload, protectedHeader } = await jwtVerify(token, createRemoteJWKSet(new URL(metadata.jwks_uri!)), {
      issuer: metadata.issuer,
      audience: API,
      typ: 'at+jwt',
      algorithms: ['ES256'],
    });
    expect(protectedHeader.kid).toEqual(expect.any(String));
    expect(payload).toMatchObject({ sub: 'alice', aud: API, client_id: 'workload-a', scope: 'read write' });
    expect(payload.exp! - payload.iat!).toBe(600);
    expect(payload.jti).toEqual(expect.any(String));

    const record = running.audit.records.at(-1)!;
    expect(record).toMatchObject({
      decision: 'allow',
      grantType: TOKEN_EXCHANGE,
      client: { id: 'workload-a', authMethod: 'private_key_jwt' },
      subject: { issuer: idp.issuer, subject: 'alice', tokenType: ID_TOKEN },
      ruleId: 'idp-to-api',
      issued: { jti: payload.jti, expiresIn: 600 },
    });
    expect(JSON.stringify(record)).not.toContain(subjectToken);
  });

  it('caps the lifetime at the subject token expiry', async () => {
    const call = await postToken(running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: await idp.mint({ sub: 'alice', aud: running.issuer }, { expiresIn: 90 }),
      subject_token_type: ID_TOKEN,
      ...(await client.auth(running.tokenEndpoint)),
    });
    expect(call.status).toBe(200);
    expect(call.body.expires_in).toBeGreaterThan(80);
    expect(call.body.expires_in).toBeLessThanOrEqual(90);
  });

  it('issues one token for several audiences and resources', async () => {
    const call = await postToken(running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: await idp.mint({ sub: 'alice', aud: running.tokenEndpoint }),
      subject_token_type: JWT,
      audience: API,
      resource: ['https://other.example.test/a', 'https://other.example.test/b?x=1'],
      ...(await client.auth(running.issuer)),
    });
    expect(call.status).toBe(200);
    const claims = JSON.parse(Buffer.from((call.body.access_token as string).split('.')[1]!, 'base64url').toString()) as { aud: string[] };
    expect(claims.aud).toEqual([API, 'https://other.example.test/a', 'https://other.example.test/b?x=1']);
  });

  it('authenticates client_secret_basic (form-encoded before base64) and client_secret_post', async () => {
    const subject = () => idp.mint({ sub: 'bob', aud: running.issuer });
    const basic = Buffer.from(`${encodeURIComponent('basic-client')}:${encodeURIComponent(SECRET).replace(/%20/g, '+')}`).toString('base64');
    const viaBasic = await postToken(
      running.tokenEndpoint,
      { grant_type: TOKEN_EXCHANGE, subject_token: await subject(), subject_token_type: ID_TOKEN },
      { headers: { authorization: `Basic ${basic}` } },
    );
    expect(viaBasic.status).toBe(200);
    const viaPost = await postToken(running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: await subject(),
      subject_token_type: ID_TOKEN,
      client_id: 'post-client',
      client_secret: SECRET,
    });
    expect(viaPost.status).toBe(200);
    expect(running.audit.records.at(-1)?.client).toEqual({ id: 'post-client', authMethod: 'client_secret_post' });
  });

  it('runs the RFC 7523 JWT bearer grant through the same validator registry', async () => {
    const call = await postToken(running.tokenEndpoint, {
      grant_type: JWT_BEARER,
      assertion: await idp.mint({ sub: 'carol', aud: running.issuer }),
      scope: 'read',
      ...(await client.auth(running.tokenEndpoint)),
    });
    expect(call.status).toBe(200);
    expect(call.body).toMatchObject({ token_type: 'Bearer', scope: 'read' });
    expect(call.body).not.toHaveProperty('issued_token_type');
    expect(running.audit.records.at(-1)?.subject).toEqual({ issuer: idp.issuer, subject: 'carol', tokenType: JWT });
  });

  it('gives client_credentials to a key-authenticated client and refuses it to a secret-authenticated one', async () => {
    const ok = await postToken(running.tokenEndpoint, { grant_type: 'client_credentials', audience: API, ...(await client.auth(running.tokenEndpoint)) });
    expect(ok.status).toBe(200);
    expect(ok.body.expires_in).toBe(120);
    const claims = JSON.parse(Buffer.from((ok.body.access_token as string).split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
    expect(claims).toMatchObject({ sub: 'workload-a', client_id: 'workload-a' });

    const basic = Buffer.from(`basic-client:${encodeURIComponent(SECRET)}`).toString('base64');
    const refused = await postToken(running.tokenEndpoint, { grant_type: 'client_credentials', audience: API }, { headers: { authorization: `Basic ${basic}` } });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toBe('unauthorized_client');
  });

  it('publishes RFC 8414 metadata derived from the registries, the JWKS and health', async () => {
    const metadata = (await (await fetch(`${running.issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    expect(metadata).toMatchObject({
      issuer: running.issuer,
      token_endpoint: running.tokenEndpoint,
      jwks_uri: `${running.issuer}/keys`,
      grant_types_supported: expect.arrayContaining([TOKEN_EXCHANGE, JWT_BEARER, 'client_credentials']),
      token_endpoint_auth_methods_supported: expect.arrayContaining(['private_key_jwt', 'client_secret_basic', 'client_secret_post']),
      token_endpoint_auth_signing_alg_values_supported: expect.arrayContaining(['ES256', 'RS256']),
      subject_token_types_supported: expect.arrayContaining([JWT, ID_TOKEN]),
      issued_token_types_supported: [ACCESS_TOKEN],
    });
    expect(metadata.token_endpoint_auth_signing_alg_values_supported).not.toContain('none');
    const jwks = (await (await fetch(`${running.issuer}/keys`)).json()) as { keys: Record<string, unknown>[] };
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig', kid: expect.any(String) });
    expect(jwks.keys[0]).not.toHaveProperty('d');
    expect(await (await fetch(`${running.issuer}/healthz`)).json()).toEqual({ status: 'ok' });
    const header = decodeProtectedHeader(
      (
        await postToken(running.tokenEndpoint, {
          grant_type: TOKEN_EXCHANGE,
          subject_token: await idp.mint({ sub: 'dave', aud: running.issuer }),
          subject_token_type: ID_TOKEN,
          ...(await client.auth(running.tokenEndpoint)),
        })
      ).body.access_token as string,
    );
    expect(header.kid).toBe(jwks.keys[0]!.kid);
  });
});
