import { CompactSign, SignJWT, UnsecuredJWT, exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashClientSecret } from '@tessera/core';
import { startLoopbackServer, type LoopbackServer } from '@tessera/plugin-testkit';
import {
  accessTokenPlugin,
  ACCESS_TOKEN,
  allowRule,
  API,
  ASSERTION_TYPE,
  generateTestKey,
  ID_TOKEN,
  JWT_BEARER,
  LoopbackIssuer,
  oidcPlugin,
  postToken,
  startBroker,
  TestClient,
  TOKEN_EXCHANGE,
  type RunningBroker,
  type TokenCall,
} from './support.js';

const SECRET = 'a client secret that is long enough';

/**
 * Every refusal is checked for four things: the status, the `error` code, that no token was issued,
 * and that nothing from the request (token contents) came back.
 */
function expectRefusal(call: TokenCall, status: number, error: string, sent: string[] = []): void {
  expect({ status: call.status, error: call.body.error }).toEqual({ status, error });
  expect(call.body).not.toHaveProperty('access_token');
  expect(Object.keys(call.body).sort()).toEqual(['error', 'error_description']);
  expect(call.body.error_description).toMatch(/^[\x20-\x21\x23-\x5b\x5d-\x7e]+$/);
  expect(call.headers.get('cache-control')).toBe('no-store');
  for (const value of sent) {
    expect(call.text).not.toContain(value);
    for (const part of value.split('.')) if (part.length > 8) expect(call.text).not.toContain(part);
  }
  expect(call.text).not.toMatch(/\/work\/|node_modules|at .*\.js:\d+/);
}

describe('refusals', () => {
  let idp: LoopbackIssuer;
  let otherIdp: LoopbackIssuer;
  let client: TestClient;
  let running: RunningBroker;
  let attacker: LoopbackServer;
  let attackerHits = 0;

  beforeAll(async () => {
    idp = await LoopbackIssuer.start();
    otherIdp = await LoopbackIssuer.start({ path: '/other' });
    client = await TestClient.create('workload-a');
    attacker = await startLoopbackServer((_request, response) => {
      attackerHits++;
      response.end('{}');
    });
    const secretHash = await hashClientSecret(SECRET);
    running = await startBroker(() => ({
      clients: [
        client.config(),
        { id: 'basic-client', auth: { method: 'client_secret_basic', secretHash } },
        { id: 'exchange-only', auth: { method: 'client_secret_post', secretHash }, grantTypes: ['token_exchange'] },
      ],
      plugins: [
        oidcPlugin({ issuer: idp.issuer, maxTokenLifetimeSeconds: 7200 }, { issuer: otherIdp.issuer, algorithms: ['ES256'] }),
        accessTokenPlugin,
      ],
      policy: { rules: [allowRule(idp.issuer, { scopes: ['read'] }), { ...allowRule(otherIdp.issuer), id: 'other', match: { issuers: [otherIdp.issuer], subjects: ['svc-*'] } }] },
    }));
  });
  afterAll(async () => {
    await running.close();
    await Promise.all([idp.close(), otherIdp.close(), attacker.close()]);
  });

  async function exchange(subjectToken: string, extra: Record<string, string | string[]> = {}): Promise<TokenCall> {
    return postToken(running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: subjectToken,
      subject_token_type: ID_TOKEN,
      audience: API,
      ...(await client.auth(running.tokenEndpoint)),
      ...extra,
    });
  }
  const claims = () => ({ sub: 'alice', aud: running.issuer });
  /** The refusal happened for the intended reason (audit only, never in the response). */
  const expectReason = (reason: string) => expect(running.audit.records.at(-1)?.reason).toContain(reason);

  describe('subject token JWT rules → 400 invalid_request', () => {
    it('alg none', async () => {
      const token = new UnsecuredJWT({ ...claims(), iss: idp.issuer }).setExpirationTime('5m').encode();
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('not a compact JWS'); // empty signature segment: refused before the header is read
      const signed = await idp.mint(claims());
      const withNone = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${signed.split('.')[1]}.${signed.split('.')[2]}`;
      expectRefusal(await exchange(withNone), 400, 'invalid_request', [signed]);
      expectReason('algorithm');
    });

    it('HS256 signed with the issuer public key as secret', async () => {
      const jwks = (await (await fetch(idp.jwksUri)).json()) as { keys: unknown[] };
      const secret = new TextEncoder().encode(JSON.stringify(jwks.keys[0]));
      const now = Math.floor(Date.now() / 1000);
      const token = await new SignJWT({ ...claims(), iss: idp.issuer, exp: now + 300 }).setProtectedHeader({ alg: 'HS256', kid: idp.key.kid }).sign(secret);
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('algorithm');
    });

    it('wrong audience', async () => {
      const token = await idp.mint({ sub: 'alice', aud: 'https://somebody-else.example' });
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('audience');
    });

    it('audience that only contains ours as a substring', async () => {
      const token = await idp.mint({ sub: 'alice', aud: `${running.issuer}.evil.example` });
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('audience');
    });

    it('expired', async () => {
      const token = await idp.mint(claims(), { expiresIn: -120 });
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('expired');
    });

    it('nbf in the future beyond the skew', async () => {
      const token = await idp.mint({ ...claims(), nbf: Math.floor(Date.now() / 1000) + 600 }, { expiresIn: 1200 });
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('not_yet_valid: claim nbf');
    });

    it('iat in the future beyond the skew', async () => {
      const token = await idp.mint({ ...claims(), iat: Math.floor(Date.now() / 1000) + 600 }, { expiresIn: 1200 });
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('not_yet_valid: iat');
    });

    it('no exp', async () => {
      const token = await idp.mint(claims(), { noExp: true });
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('claim exp');
    });

    it('lifetime longer than the issuer allows', async () => {
      const token = await idp.mint(claims(), { expiresIn: 3 * 3600 });
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('lifetime');
    });

    it('unknown issuer', async () => {
      const stranger = await LoopbackIssuer.start();
      try {
        const token = await stranger.mint(claims());
        expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
        expectReason('untrusted_issuer');
        expect(stranger.jwksFetches + stranger.discoveryFetches).toBe(0);
      } finally {
        await stranger.close();
      }
    });

    it('issuer differing only by a trailing slash', async () => {
      const token = await idp.mint({ ...claims(), iss: `${idp.issuer}/` });
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('untrusted_issuer');
    });

    it("issuer A's iss signed with issuer B's key (same kid)", async () => {
      const token = await idp.mint(claims(), { key: otherIdp.key, header: { kid: idp.key.kid } });
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('signature');
    });

    it("issuer A's iss signed with issuer B's key (B's kid)", async () => {
      const token = await idp.mint(claims(), { key: otherIdp.key });
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('unknown_key');
    });

    it('unknown kid', async () => {
      const token = await idp.mint(claims(), { key: await generateTestKey('ES256') });
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('unknown_key');
    });

    it('jku header pointing at an attacker JWKS is never fetched', async () => {
      const rogue = await generateTestKey('ES256');
      const token = await idp.mint(claims(), { key: rogue, header: { jku: `${attacker.url}/jwks`, x5u: `${attacker.url}/cert` } });
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('unknown_key');
      expect(attackerHits).toBe(0);
    });

    it('embedded jwk header with the attacker key', async () => {
      const rogue = await generateTestKey('ES256');
      const token = await idp.mint(claims(), { key: rogue, header: { kid: idp.key.kid, jwk: rogue.publicJwk } });
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('signature');
    });

    it('crit header', async () => {
      const payload = new TextEncoder().encode(JSON.stringify({ ...claims(), iss: idp.issuer, exp: Math.floor(Date.now() / 1000) + 300 }));
      // jose refuses to sign unknown critical extensions unless told it understands them.
      const token = await new CompactSign(payload)
        .setProtectedHeader({ alg: 'ES256', kid: idp.key.kid, crit: ['x-policy'], 'x-policy': 'strict' })
        .sign(idp.key.privateKey, { crit: { 'x-policy': true } });
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('crit');
    });

    it('algorithm outside the issuer allow-list (RS256 where only ES256 is allowed)', async () => {
      const rsa = await generateTestKey('RS256');
      const token = await otherIdp.mint({ sub: 'svc-a', aud: running.issuer }, { key: rsa, header: { kid: otherIdp.key.kid } });
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('algorithm');
    });

    it('tampered payload', async () => {
      const token = await idp.mint(claims());
      const [header, , signature] = token.split('.');
      const forged = `${header}.${Buffer.from(JSON.stringify({ ...claims(), iss: idp.issuer, sub: 'admin', exp: 9_999_999_999 })).toString('base64url')}.${signature}`;
      expectRefusal(await exchange(forged), 400, 'invalid_request', [forged]);
      expectReason('signature');
    });

    it('signature from an unrelated key under the right kid', async () => {
      const { privateKey } = await generateKeyPair('ES256');
      const payload = new TextEncoder().encode(JSON.stringify({ ...claims(), iss: idp.issuer, exp: Math.floor(Date.now() / 1000) + 300 }));
      const token = await new CompactSign(payload).setProtectedHeader({ alg: 'ES256', kid: idp.key.kid }).sign(privateKey);
      expectRefusal(await exchange(token), 400, 'invalid_request', [token]);
      expectReason('signature');
    });

    it('a valid token re-spelled with base64 padding or whitespace', async () => {
      const token = await idp.mint(claims());
      const [header, payload, signature] = token.split('.');
      for (const variant of [`${header}.${payload}.${signature}==`, `${header}.${payload}. ${signature}`, `${header} .${payload}.${signature}`]) {
        expectRefusal(await exchange(variant), 400, 'invalid_request', [token]);
        expectReason('not a compact JWS');
      }
    });

    it('garbage, a JWE-shaped string and an oversized token', async () => {
      expectRefusal(await exchange('not-a-jwt'), 400, 'invalid_request');
      expectRefusal(await exchange('eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d'), 400, 'invalid_request');
      const big = await idp.mint({ ...claims(), pad: 'x'.repeat(20_000) });
      expectRefusal(await exchange(big), 400, 'invalid_request');
    });
  });

  describe('request rules', () => {
    it('unknown subject_token_type → invalid_request', async () => {
      const token = await idp.mint(claims());
      expectRefusal(await exchange(token, { subject_token_type: 'urn:example:unknown' }), 400, 'invalid_request', [token]);
    });

    it('missing subject_token → invalid_request', async () => {
      const call = await postToken(running.tokenEndpoint, { grant_type: TOKEN_EXCHANGE, subject_token_type: ID_TOKEN, ...(await client.auth(running.tokenEndpoint)) });
      expectRefusal(call, 400, 'invalid_request');
    });

    it('a repeated parameter → invalid_request', async () => {
      const token = await idp.mint(claims());
      expectRefusal(await exchange(token, { scope: ['read', 'read'] }), 400, 'invalid_request', [token]);
      expectReason('repeated parameter scope');
    });

    it('an actor_token from an external IdP is validated and then refused as actor, never silently ignored', async () => {
      const token = await idp.mint(claims());
      const actor = await idp.mint({ sub: 'agent', aud: running.issuer });
      expectRefusal(await exchange(token, { actor_token: actor, actor_token_type: ID_TOKEN }), 400, 'invalid_request', [token, actor]);
      expect(running.audit.records.at(-1)).toMatchObject({ reason: 'actor: actor_not_trusted', actor: { subject: 'agent' } });
      expectRefusal(await exchange(token, { actor_token: actor }), 400, 'invalid_request', [token, actor]);
      expectRefusal(await exchange(token, { actor_token: 'garbage', actor_token_type: ID_TOKEN }), 400, 'invalid_request', [token]);
    });

    it('unsupported requested_token_type → invalid_request', async () => {
      const token = await idp.mint(claims());
      expectRefusal(await exchange(token, { requested_token_type: 'urn:ietf:params:oauth:token-type:saml2' }), 400, 'invalid_request', [token]);
    });

    it('unsupported grant_type, missing grant_type', async () => {
      expectRefusal(await postToken(running.tokenEndpoint, { grant_type: 'password', username: 'u', password: 'p' }), 400, 'unsupported_grant_type');
      expectRefusal(await postToken(running.tokenEndpoint, { subject_token: 'x' }), 400, 'invalid_request');
    });

    it('resource with a fragment → invalid_target', async () => {
      const token = await idp.mint(claims());
      expectRefusal(await exchange(token, { resource: 'https://api.example.test/#frag' }), 400, 'invalid_target', [token]);
    });

    it('an audience longer than 2048 characters → invalid_target, before any pattern matching', async () => {
      const token = await idp.mint(claims());
      expectRefusal(await exchange(token, { audience: `https://${'-'.repeat(3_000)}.example.test` }), 400, 'invalid_target', [token]);
      expectReason('target length');
    });

    it('malformed scope → invalid_scope', async () => {
      const token = await idp.mint(claims());
      expectRefusal(await exchange(token, { scope: 'read "quoted"' }), 400, 'invalid_scope', [token]);
    });
  });

  describe('transport rules', () => {
    it('GET /token → 405 with Allow', async () => {
      const call = await postToken(running.tokenEndpoint, {}, { method: 'GET' });
      expectRefusal(call, 405, 'invalid_request');
      expect(call.headers.get('allow')).toBe('POST');
      expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', error: 'invalid_request', reason: 'method GET' });
    });

    it('JSON body → 415', async () => {
      const response = await fetch(running.tokenEndpoint, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"grant_type":"x"}' });
      expect(response.status).toBe(415);
      expect(((await response.json()) as { error: string }).error).toBe('invalid_request');
    });

    it('body over 64 KiB → 413', async () => {
      const call = await postToken(running.tokenEndpoint, { grant_type: TOKEN_EXCHANGE, subject_token: 'x'.repeat(70_000), subject_token_type: ID_TOKEN });
      expectRefusal(call, 413, 'invalid_request');
      expectReason('body size');
    });

    it('unknown path → 404 JSON', async () => {
      const response = await fetch(`${running.issuer}/authorize`);
      expect(response.status).toBe(404);
    });
  });

  describe('client authentication → 401 invalid_client with WWW-Authenticate', () => {
    const subject = () => idp.mint({ sub: 'alice', aud: running.issuer });
    const expectChallenge = (call: TokenCall) => expect(call.headers.get('www-authenticate')).toMatch(/^Basic realm=/);
    const withAssertion = async (assertion: string) =>
      postToken(running.tokenEndpoint, {
        grant_type: TOKEN_EXCHANGE,
        subject_token: await subject(),
        subject_token_type: ID_TOKEN,
        client_assertion_type: ASSERTION_TYPE,
        client_assertion: assertion,
      });

    it('no client authentication at all', async () => {
      const call = await postToken(running.tokenEndpoint, { grant_type: TOKEN_EXCHANGE, subject_token: await subject(), subject_token_type: ID_TOKEN });
      expectRefusal(call, 401, 'invalid_client');
      expectChallenge(call);
    });

    it('a replayed client assertion', async () => {
      const assertion = await client.assertion(running.tokenEndpoint);
      expect((await withAssertion(assertion)).status).toBe(200);
      const replay = await withAssertion(assertion);
      expectRefusal(replay, 401, 'invalid_client', [assertion]);
      expectChallenge(replay);
      expect(running.audit.records.at(-1)?.reason).toContain('replayed');
    });

    it('assertion for another audience', async () => {
      const assertion = await client.assertion('https://other-server.example/token');
      const call = await withAssertion(assertion);
      expectRefusal(call, 401, 'invalid_client', [assertion]);
    });

    it('assertion living longer than 5 minutes', async () => {
      const assertion = await client.assertion(running.tokenEndpoint, {}, { lifetime: 3600 });
      const call = await withAssertion(assertion);
      expectRefusal(call, 401, 'invalid_client', [assertion]);
    });

    it('assertion without jti, or signed by a key the client does not own', async () => {
      for (const assertion of [
        await client.assertion(running.tokenEndpoint, { jti: undefined }),
        await client.assertion(running.tokenEndpoint, {}, { key: await generateTestKey('ES256') }),
        await client.assertion(running.tokenEndpoint, { iss: 'someone-else' }),
      ]) {
        const call = await withAssertion(assertion);
        expectRefusal(call, 401, 'invalid_client', [assertion]);
      }
    });

    it('wrong secret over Basic, unknown client, client_id mismatch', async () => {
      for (const credentials of [`basic-client:${encodeURIComponent('wrong secret, long enough')}`, `nobody:${encodeURIComponent(SECRET)}`]) {
        const call = await postToken(
          running.tokenEndpoint,
          { grant_type: TOKEN_EXCHANGE, subject_token: await subject(), subject_token_type: ID_TOKEN },
          { headers: { authorization: `Basic ${Buffer.from(credentials).toString('base64')}` } },
        );
        expectRefusal(call, 401, 'invalid_client', [SECRET]);
        expectChallenge(call);
      }
      const mismatch = await postToken(
        running.tokenEndpoint,
        { grant_type: TOKEN_EXCHANGE, subject_token: await subject(), subject_token_type: ID_TOKEN, client_id: 'exchange-only' },
        { headers: { authorization: `Basic ${Buffer.from(`basic-client:${encodeURIComponent(SECRET)}`).toString('base64')}` } },
      );
      expectRefusal(mismatch, 401, 'invalid_client');
    });

    it('a secret client using the wrong method', async () => {
      const call = await postToken(running.tokenEndpoint, {
        grant_type: TOKEN_EXCHANGE,
        subject_token: await subject(),
        subject_token_type: ID_TOKEN,
        client_id: 'basic-client',
        client_secret: SECRET,
      });
      expectRefusal(call, 401, 'invalid_client', [SECRET]);
    });

    it('two authentication methods at once → invalid_request', async () => {
      const call = await postToken(
        running.tokenEndpoint,
        { grant_type: TOKEN_EXCHANGE, subject_token: await subject(), subject_token_type: ID_TOKEN, ...(await client.auth(running.tokenEndpoint)) },
        { headers: { authorization: `Basic ${Buffer.from(`basic-client:${encodeURIComponent(SECRET)}`).toString('base64')}` } },
      );
      expectRefusal(call, 400, 'invalid_request');
    });
  });

  describe('policy', () => {
    it('audience not allowed → invalid_target', async () => {
      const token = await idp.mint(claims());
      expectRefusal(await exchange(token, { audience: 'https://payments.example.test' }), 400, 'invalid_target', [token]);
    });

    it('scope not allowed → invalid_scope', async () => {
      const token = await idp.mint(claims());
      expectRefusal(await exchange(token, { scope: 'read admin' }), 400, 'invalid_scope', [token]);
    });

    it('no rule matches the subject → invalid_request, with the rule class in the audit record only', async () => {
      const token = await otherIdp.mint({ sub: 'user-not-a-service', aud: running.issuer });
      const call = await exchange(token);
      expectRefusal(call, 400, 'invalid_request', [token]);
      expect(call.text).not.toContain('no_rule_matched');
      expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', error: 'invalid_request', reason: 'policy: no_rule_matched' });
    });

    it('client not allowed the grant type → unauthorized_client', async () => {
      const call = await postToken(running.tokenEndpoint, {
        grant_type: JWT_BEARER,
        assertion: await idp.mint(claims()),
        client_id: 'exchange-only',
        client_secret: SECRET,
      });
      expectRefusal(call, 400, 'unauthorized_client', [SECRET]);
    });

    it('a bad JWT bearer assertion → invalid_grant', async () => {
      const assertion = await idp.mint(claims(), { expiresIn: -300 });
      const call = await postToken(running.tokenEndpoint, { grant_type: JWT_BEARER, assertion, ...(await client.auth(running.tokenEndpoint)) });
      expectRefusal(call, 400, 'invalid_grant', [assertion]);
    });

    it('an assertion unacceptable past verification (a chain from another issuer) → invalid_grant', async () => {
      const assertion = await idp.mint({ ...claims(), act: { sub: 'agent' } });
      const call = await postToken(running.tokenEndpoint, { grant_type: JWT_BEARER, assertion, ...(await client.auth(running.tokenEndpoint)) });
      expectRefusal(call, 400, 'invalid_grant', [assertion]);
      expect(running.audit.records.at(-1)).toMatchObject({ reason: 'subject: act_from_foreign_issuer' });
    });
  });

  it('every refusal above produced exactly one deny audit record and no token', () => {
    const denies = running.audit.records.filter((record) => record.decision === 'deny');
    expect(denies.length).toBeGreaterThanOrEqual(40);
    for (const record of denies) expect(record.issued).toBeUndefined();
  });

  it('gives every audit record its own request id', () => {
    const ids = new Set(running.audit.records.map((record) => record.requestId));
    expect(ids.size).toBe(running.audit.records.length);
  });

  it('access tokens are only issued as requested_token_type access_token', async () => {
    const call = await exchange(await idp.mint(claims()), { requested_token_type: ACCESS_TOKEN });
    expect(call.status).toBe(200);
  });
});
