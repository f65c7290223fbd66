import { Buffer } from 'node:buffer';
import { CompactSign } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API, accessTokenPlugin, allowRule, ID_TOKEN, JWT, JWT_BEARER, LoopbackIssuer, postToken, startBroker, TestClient, TOKEN_EXCHANGE, type RunningBroker } from '../e2e/support.js';
import { expectRefused, respellToken } from './refusal.js';

/**
 * Catalogue: JWT layer. Weakness classes 3 (JWT bearer audience) and 5 (non-canonical JWS), and what
 * fuzzing found next to 5: validly signed tokens whose JSON names a member twice, or types a claim wrongly.
 */
let idp: LoopbackIssuer;
let client: TestClient;
let running: RunningBroker;
const EXTRA_AUDIENCE = 'https://gateway.example.test';

beforeAll(async () => {
  idp = await LoopbackIssuer.start();
  client = await TestClient.create();
  running = await startBroker(() => ({
    clients: [client.config()],
    plugins: [{ use: '@tessera/plugin-oidc', config: { issuers: [{ issuer: idp.issuer, allowedAudiences: [EXTRA_AUDIENCE] }], tokenTypes: [ID_TOKEN, JWT] } }, accessTokenPlugin],
    policy: { rules: [allowRule(idp.issuer)] },
  }));
});
afterAll(async () => {
  await running?.close();
  await idp?.close();
});

const exchange = async (subjectToken: string, auth?: Record<string, string>) =>
  postToken(running.tokenEndpoint, {
    grant_type: TOKEN_EXCHANGE,
    subject_token: subjectToken,
    subject_token_type: ID_TOKEN,
    audience: API,
    ...(auth ?? (await client.auth(running.tokenEndpoint))),
  });

describe('class 5: one token, one spelling', () => {
  /** A token whose three segments all leave unused bits (lengths 2 or 3 mod 4), so each can be respelled. */
  async function tokenWithUnusedBitsEverywhere(): Promise<string> {
    for (let pad = 0; pad < 16; pad++) {
      const token = await idp.mint({ sub: 'alice', aud: running.issuer, pad: 'x'.repeat(pad) }, { header: { typ: 'JWT', ...(pad % 2 ? { cty: 'x' } : {}) } });
      if (token.split('.').every((segment) => segment.length % 4 >= 2)) return token;
    }
    throw new Error('no token shape with unused bits in every segment');
  }

  it('refuses a subject token respelled in its header, payload or signature (same bytes, other text)', async () => {
    const token = await tokenWithUnusedBitsEverywhere();
    expect((await exchange(token)).status).toBe(200);
    for (const index of [0, 1, 2]) {
      const respelled = respellToken(token, index)!;
      // The decoded bytes are identical: only the spelling differs.
      expect(Buffer.from(respelled.split('.')[index]!, 'base64url')).toEqual(Buffer.from(token.split('.')[index]!, 'base64url'));
      expectRefused(await exchange(respelled), 400, 'invalid_request', [respelled]);
    }
  });

  it('refuses a client assertion respelled in its signature', async () => {
    for (let attempt = 0; attempt < 8; attempt++) {
      const assertion = await client.assertion(running.tokenEndpoint);
      const respelled = respellToken(assertion, 2);
      if (!respelled) continue;
      const auth = { client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: respelled };
      const response = await exchange(await idp.mint({ sub: 'alice', aud: running.issuer }), auth);
      expectRefused(response, 401, 'invalid_client', [respelled]);
      expect(running.audit.records.at(-1)).toMatchObject({ reason: 'client_auth: assertion is not a compact JWS' });
      return;
    }
    throw new Error('no assertion with unused signature bits');
  });
});

describe('class 3: a JWT bearer assertion names the broker (RFC 7523 §3)', () => {
  const bearer = async (assertion: string) =>
    postToken(running.tokenEndpoint, { grant_type: JWT_BEARER, assertion, audience: API, ...(await client.auth(running.tokenEndpoint)) });

  it('accepts an assertion naming the broker', async () => {
    expect((await bearer(await idp.mint({ sub: 'alice', aud: running.issuer }))).status).toBe(200);
  });

  it("never lets an issuer's extra allowedAudiences stand in for the broker", async () => {
    const elsewhere = await idp.mint({ sub: 'alice', aud: EXTRA_AUDIENCE });
    // The same token is a fine subject token: allowedAudiences apply to token exchange.
    expect((await exchange(elsewhere)).status).toBe(200);
    expectRefused(await bearer(elsewhere), 400, 'invalid_grant', [elsewhere]);
  });
});

describe('one token, one meaning: members named twice, registered claims of the wrong type', () => {
  /** Signs the claims text exactly as written (JSON objects cannot hold a duplicate; the wire can). */
  const signText = (claimsText: string, key = idp.key) =>
    new CompactSign(new TextEncoder().encode(claimsText)).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' }).sign(key.privateKey);
  const now = () => Math.floor(Date.now() / 1000);
  const claims = (extra: string) => `{"iss":"${idp.issuer}","aud":"${running.issuer}","iat":${now()},"exp":${now() + 300}${extra}}`;

  it('issues for the plain text, refuses a subject token that names sub twice (JSON.parse keeps the last; others the first)', async () => {
    expect((await exchange(await signText(claims(',"sub":"alice"')))).status).toBe(200);
    const twice = await signText(claims(',"sub":"alice","sub":"mallory"'));
    expectRefused(await exchange(twice), 400, 'invalid_request', [twice]);
    expect(running.audit.records.at(-1)).toMatchObject({ reason: 'subject: malformed: a member is named twice' });
  });

  it('refuses a subject token whose jti or sub has the wrong type', async () => {
    for (const extra of [',"sub":"alice","jti":12345', ',"sub":["alice"]']) {
      const token = await signText(claims(extra));
      expectRefused(await exchange(token), 400, 'invalid_request', [token]);
    }
  });

  it('refuses a client assertion that names sub twice', async () => {
    const text = `{"sub":"mallory","iss":"${client.id}","sub":"${client.id}","aud":"${running.tokenEndpoint}","jti":"${crypto.randomUUID()}","iat":${now()},"exp":${now() + 60}}`;
    const assertion = await signText(text, client.key);
    const response = await exchange(await idp.mint({ sub: 'alice', aud: running.issuer }), { client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion });
    expectRefused(response, 401, 'invalid_client', [assertion]);
  });
});
