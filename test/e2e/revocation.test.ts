import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SignJWT } from 'jose';
import {
  ACCESS_TOKEN,
  accessTokenPlugin,
  API,
  generateTestKey,
  ID_TOKEN,
  LoopbackIssuer,
  oidcPlugin,
  postToken,
  startBroker,
  TestClient,
  TOKEN_EXCHANGE,
  type RunningBroker,
  type TokenCall,
} from './support.js';

/**
 * RFC 7009 over loopback: a client revokes an access token the broker issued it, and the broker then
 * refuses that token as a subject token. Impersonation only (no actor token).
 */
describe('token revocation', () => {
  let idp: LoopbackIssuer;
  let clientA: TestClient;
  let clientB: TestClient;
  let running: RunningBroker;
  let disabled: RunningBroker;
  let revokeUrl = '';

  beforeAll(async () => {
    idp = await LoopbackIssuer.start();
    [clientA, clientB] = await Promise.all([TestClient.create('client-a'), TestClient.create('client-b')]);
    const build = (issuer: string) => ({
      clients: [clientA.config(['token_exchange']), clientB.config(['token_exchange']), { id: 'public', auth: { method: 'none' } }],
      // The second issuer is this broker, trusted through the oidc plugin too: a misconfiguration that
      // must not become a way around revocation and audience binding.
      plugins: [oidcPlugin({ issuer: idp.issuer }, { issuer, jwksUri: `${issuer}/keys` }), accessTokenPlugin],
      policy: {
        rules: [
          // The user's token becomes a broker token for the broker itself...
          { id: 'idp-to-broker', match: { issuers: [idp.issuer], subjectTokenTypes: [ID_TOKEN] }, grant: { audiences: [issuer], scopes: ['read'], maxLifetimeSeconds: 600 } },
          // ...which its holder exchanges onwards for the API.
          { id: 'broker-to-api', match: { issuers: [issuer], subjectTokenTypes: [ACCESS_TOKEN] }, grant: { audiences: [API], scopes: ['read'], maxLifetimeSeconds: 300 } },
        ],
      },
    });
    running = await startBroker(build);
    disabled = await startBroker((issuer) => ({ ...build(issuer), endpoints: { revocation: { enabled: false } } }));
    revokeUrl = `${running.issuer}/revoke`;
  });
  afterAll(async () => {
    await running?.close();
    await disabled?.close();
    await idp?.close();
  });

  /** A broker access token issued to `client` through token exchange. */
  const brokerToken = async (client: TestClient = clientA) => {
    const response = await postToken(running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: await idp.mint({ sub: 'alice', aud: running.issuer }),
      subject_token_type: ID_TOKEN,
      audience: running.issuer,
      ...(await client.auth(running.issuer)),
    });
    expect(response.status, response.text).toBe(200);
    return response.body.access_token as string;
  };
  const exchange = async (token: string, client: TestClient = clientA) =>
    postToken(running.tokenEndpoint, { grant_type: TOKEN_EXCHANGE, subject_token: token, subject_token_type: ACCESS_TOKEN, audience: API, ...(await client.auth(running.issuer)) });
  /** As client-a with a fresh client assertion, unless `client` says otherwise (null: no credentials). */
  const revoke = async (fields: Record<string, string>, client: TestClient | null = clientA, headers: Record<string, string> = {}) =>
    postToken(revokeUrl, { ...fields, ...(client ? await client.auth(running.issuer) : {}) }, { headers });
  /** Nothing of the token (its payload, where most of it is) appears in `text`. */
  const expectNoEcho = (text: string, token: string) => expect(text).not.toContain((token.split('.')[1] ?? token).slice(0, 16));

  /** The response is an RFC 7009 §2.2 success: 200, no-store, nothing of the token in it. */
  const expectOk = (response: TokenCall, token?: string) => {
    expect(response.status, response.text).toBe(200);
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(response.body).toEqual({});
    if (token) expectNoEcho(response.text, token);
  };
  const expectError = (response: TokenCall, status: number, error: string, token?: string) => {
    expect([response.status, response.body.error], response.text).toEqual([status, error]);
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(response.body).not.toHaveProperty('access_token');
    if (token) expectNoEcho(response.text, token);
  };

  it('revokes a token so that the broker refuses it afterwards', async () => {
    const token = await brokerToken();
    const before = await exchange(token);
    expect(before.status, before.text).toBe(200);
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'allow', ruleId: 'broker-to-api', subject: { issuer: running.issuer, tokenType: ACCESS_TOKEN } });

    const revocationsBefore = running.audit.revocations.length;
    expectOk(await revoke({ token, token_type_hint: 'access_token' }), token);
    expect(running.audit.revocations.slice(revocationsBefore)).toEqual([
      expect.objectContaining({ event: 'revoke', decision: 'allow', outcome: 'revoked', client: { id: 'client-a', authMethod: 'private_key_jwt' }, tokenTypeHint: 'access_token' }),
    ]);

    const after = await exchange(token);
    expectError(after, 400, 'invalid_request', token);
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', error: 'invalid_request', reason: 'subject: claims: revoked' });
    expectNoEcho(JSON.stringify(running.audit.revocations), token);

    // Revoking again changes nothing and still answers 200.
    expectOk(await revoke({ token }));
  });

  it('accepts its own tokens only through the access-token validator, never around revocation', async () => {
    const token = await brokerToken();
    expectOk(await revoke({ token }));
    // The oidc plugin also trusts this broker's keys here, but its identities from this issuer are refused.
    const asJwt = await postToken(running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: token,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      audience: API,
      ...(await clientA.auth(running.issuer)),
    });
    expectError(asJwt, 400, 'invalid_request', token);
    expect(running.audit.records.at(-1)).toMatchObject({ reason: 'subject: untrusted_issuer: a token of this broker is accepted only as an access_token' });
  });

  it('leaves a token valid when another client tries to revoke it', async () => {
    const token = await brokerToken(clientA);
    const refused = await revoke({ token }, clientB);
    // RFC 7009 §2.1: the request is refused; RFC 6749 §5.2 names a token issued to another client invalid_grant.
    expectError(refused, 400, 'invalid_grant', token);
    expect(running.audit.revocations.at(-1)).toMatchObject({ decision: 'deny', error: 'invalid_grant', client: { id: 'client-b' } });
    const still = await exchange(token);
    expect(still.status, still.text).toBe(200);
  });

  it('answers 200 for unknown, foreign and malformed tokens, revoking nothing', async () => {
    const foreign = await generateTestKey('ES256');
    const now = Math.floor(Date.now() / 1000);
    const forged = await new SignJWT({ iss: running.issuer, sub: 'alice', aud: running.issuer, iat: now, exp: now + 300, jti: 'forged', client_id: 'client-a' })
      .setProtectedHeader({ alg: 'ES256', kid: foreign.kid, typ: 'at+jwt' })
      .sign(foreign.privateKey);
    const idToken = await idp.mint({ sub: 'alice', aud: running.issuer });
    for (const token of ['definitely-not-a-token', forged, idToken]) expectOk(await revoke({ token, token_type_hint: 'refresh_token' }), token);
    expect(running.audit.revocations.slice(-3).map((record) => record.outcome)).toEqual(['ignored', 'ignored', 'ignored']);
    // An unknown hint is ignored, not refused (§2.1).
    const token = await brokerToken();
    expectOk(await revoke({ token, token_type_hint: 'id_token' }));
    expectError(await exchange(token), 400, 'invalid_request');
  });

  it('refuses a request without the token parameter', async () => {
    expectError(await revoke({ token_type_hint: 'access_token' }), 400, 'invalid_request');
    expect(running.audit.revocations.at(-1)).toMatchObject({ decision: 'deny', error: 'invalid_request', reason: 'revocation: missing token' });
  });

  it('refuses unauthenticated and public clients with 401 invalid_client and a challenge', async () => {
    const token = await brokerToken();
    for (const response of [
      await revoke({ token }, null),
      await revoke({ token, client_id: 'public' }, null),
      await revoke({ token }, null, { authorization: `Basic ${Buffer.from('client-a:guess').toString('base64')}` }),
    ]) {
      expectError(response, 401, 'invalid_client', token);
      expect(response.headers.get('www-authenticate')).toBe('Basic realm="tessera"');
    }
    expect((await exchange(token)).status).toBe(200);
  });

  it('keeps the token endpoint transport rules: POST, form only, no repeated parameters', async () => {
    expect((await fetch(revokeUrl)).status).toBe(405);
    const json = await fetch(revokeUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"token":"x"}' });
    expect([json.status, ((await json.json()) as { error: string }).error]).toEqual([415, 'invalid_request']);
    const form = new URLSearchParams(await clientA.auth(running.issuer));
    form.append('token', 'one');
    form.append('token', 'two');
    const repeated = await fetch(revokeUrl, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form });
    expect([repeated.status, ((await repeated.json()) as { error: string }).error]).toEqual([400, 'invalid_request']);
    const large = await postToken(revokeUrl, { token: 'x'.repeat(70_000) });
    expect(large.status).toBe(413);
  });

  it('publishes the endpoint in RFC 8414 metadata only when enabled', async () => {
    const metadata = (await (await fetch(`${running.issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    expect(metadata).toMatchObject({
      revocation_endpoint: revokeUrl,
      revocation_endpoint_auth_methods_supported: ['private_key_jwt'],
      revocation_endpoint_auth_signing_alg_values_supported: expect.arrayContaining(['ES256']),
      token_endpoint_auth_methods_supported: expect.arrayContaining(['private_key_jwt', 'none']),
      subject_token_types_supported: expect.arrayContaining([ACCESS_TOKEN, ID_TOKEN]),
    });
    const off = (await (await fetch(`${disabled.issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    expect(off).not.toHaveProperty('revocation_endpoint');
    expect(off).not.toHaveProperty('revocation_endpoint_auth_methods_supported');
    expect((await postToken(`${disabled.issuer}/revoke`, { token: 'x', ...(await clientA.auth(disabled.issuer)) })).status).toBe(404);
  });
});
