import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessTokenPlugin, API, ID_TOKEN, LoopbackIssuer, postToken, startBroker, TestClient, TOKEN_EXCHANGE, tokenCall, type RunningBroker, type TokenCall } from '../e2e/support.js';
import { expectRefused } from './refusal.js';

/** Catalogue: transport and form. Weakness class 4 (unsafe target values), through the form and JSON doors. */
let idp: LoopbackIssuer;
let client: TestClient;
let running: RunningBroker;

beforeAll(async () => {
  idp = await LoopbackIssuer.start();
  client = await TestClient.create();
  running = await startBroker(() => ({
    clients: [client.config()],
    endpoints: { jsonExchange: { enabled: true } },
    plugins: [{ use: '@tessera/plugin-oidc', config: { issuers: [{ issuer: idp.issuer }] } }, accessTokenPlugin],
    policy: {
      rules: [
        // Deliberately wide patterns: the refusals below must come before policy matching, not from it.
        { id: 'wide', match: { issuers: [idp.issuer] }, grant: { audiences: ['**'], scopes: ['**'], defaultAudiences: [API] } },
      ],
    },
  }));
});
afterAll(async () => {
  await running?.close();
  await idp?.close();
});

/** Posts a raw form body, so percent-encoding and bytes are exactly what the test says. */
async function postRaw(body: string | Uint8Array, contentType = 'application/x-www-form-urlencoded'): Promise<TokenCall> {
  return tokenCall(await fetch(running.tokenEndpoint, { method: 'POST', headers: { 'content-type': contentType }, body }));
}

async function validForm(): Promise<URLSearchParams> {
  const form = new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: await idp.mint({ sub: 'alice', aud: running.issuer }), subject_token_type: ID_TOKEN });
  for (const [name, value] of Object.entries(await client.auth(running.tokenEndpoint))) form.set(name, value);
  return form;
}

/** A valid request plus raw `&name=value` (already percent-encoded as the test wants). */
async function withRaw(raw: string): Promise<TokenCall> {
  return postRaw(`${(await validForm()).toString()}&${raw}`);
}

describe('class 4: unsafe target values are refused before policy matching', () => {
  it('issues for a plain audience and resource (the wide rule really would match anything)', async () => {
    expect((await withRaw(`audience=${encodeURIComponent(API)}`)).status, JSON.stringify(running.audit.records.at(-1))).toBe(200);
    // A leading byte-order mark is not content (RFC 8259 §8.1 allows ignoring it; so does the form reader).
    expect((await postRaw(`\uFEFF${(await validForm()).toString()}`)).status).toBe(200);
    expect((await withRaw(`resource=${encodeURIComponent('https://api.example.test/v1/items')}`)).status, JSON.stringify(running.audit.records.at(-1))).toBe(200);
  });

  it.each([
    ['NUL', 'api%00x'],
    ['a control character', 'api%07'],
    ['DEL', 'api%7F'],
    ['a C1 control', 'api%C2%85'],
    ['a space inside', 'api+one'],
    ['a newline (header injection downstream)', 'api%0D%0AX-Injected:1'],
    ['a no-break space', 'api%C2%A0'],
    ['a bidi override', 'api%E2%80%AEtxt'],
    ['a zero-width space', 'a%E2%80%8Bpi'],
    ['invalid UTF-8', 'api%FF'],
    ['an overlong UTF-8 encoding', 'api%C0%AF'],
    ['an encoded lone surrogate', 'api%ED%A0%80'],
    ['a stray %', 'api%zz'],
  ])('audience with %s → invalid_target', async (_, encoded) => {
    const response = await withRaw(`audience=${encoded}`);
    expectRefused(response, 400, 'invalid_target');
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', error: 'invalid_target' });
    expect(running.audit.records.at(-1)!.ruleId).toBeUndefined();
  });

  it.each([
    ['a fragment', 'https://api.example.test/#frag'],
    ['a relative reference', '/v1/items'],
    ['a space', 'https://api.example.test/a b'],
    ['a backslash (WHATWG URL would read it as /)', 'https:\\\\api.example.test\\x'],
    ['non-ASCII', 'https://äpi.example.test/'],
    ['a bad IPv6 literal', 'https://[::zz]/'],
    ['no scheme', 'api.example.test'],
  ])('resource with %s → invalid_target', async (_, value) => {
    expectRefused(await withRaw(`resource=${encodeURIComponent(value)}`), 400, 'invalid_target');
  });

  it('a resource with invalid UTF-8 → invalid_target', async () => {
    expectRefused(await withRaw('resource=https%3A%2F%2Fapi.example.test%2F%FF'), 400, 'invalid_target');
  });

  it.each([
    ['invalid UTF-8', 'read%FF'],
    ['a control character', 'read%01'],
    ['a non-ASCII character', 'r%C3%A9ad'],
    ['a tab between tokens', 'read%09write'],
  ])('scope with %s → invalid_scope', async (_, encoded) => {
    expectRefused(await withRaw(`scope=${encoded}`), 400, 'invalid_scope');
  });

  it('any other parameter with invalid UTF-8 → invalid_request, and a body that is not UTF-8 at all', async () => {
    const form = await validForm();
    const token = form.get('subject_token')!;
    expectRefused(await postRaw(form.toString().replace('subject_token_type=', 'subject_token_type=%FF')), 400, 'invalid_request', [token]);
    const bytes = new Uint8Array([...new TextEncoder().encode(`${form.toString()}&audience=api`), 0xff]);
    expectRefused(await postRaw(bytes), 400, 'invalid_request', [token]);
  });

  it('the JSON door refuses the same values, lone surrogate escapes included', async () => {
    // A fresh request (and so a fresh, unreplayed client assertion) for every call.
    const postJson = async (extra: Record<string, unknown>) => {
      const response = await fetch(`${running.issuer}/v1/exchange/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...Object.fromEntries(await validForm()), ...extra }),
      });
      return tokenCall(response);
    };
    expect((await postJson({ audience: API })).status).toBe(200);
    expectRefused(await postJson({ audience: 'api\u0000' }), 400, 'invalid_target');
    expectRefused(await postJson({ audience: ['ok', 'a b'] }), 400, 'invalid_target');
    expectRefused(await postJson({ resource: 'https://api.example.test/#x' }), 400, 'invalid_target');
    // JSON.stringify escapes a lone surrogate as \udc80: valid JSON text, ill-formed Unicode.
    expectRefused(await postJson({ audience: 'api\udc80' }), 400, 'invalid_target');
    expectRefused(await postJson({ scope: 'read\ud800' }), 400, 'invalid_scope');
    expectRefused(await postJson({ subject_token_type: `${ID_TOKEN}\udc80` }), 400, 'invalid_request');
  });
});

describe('a signed token never carries an unsafe value, whatever policy says', () => {
  it('refuses a grant whose configured default audience holds a control character', async () => {
    const broker = await startBroker(() => ({
      clients: [client.config()],
      plugins: [{ use: '@tessera/plugin-oidc', config: { issuers: [{ issuer: idp.issuer }] } }, accessTokenPlugin],
      policy: { rules: [{ id: 'sloppy-defaults', match: { issuers: [idp.issuer] }, grant: { audiences: ['**'], defaultAudiences: ['https://api.example.test/\u0007'] } }] },
    }));
    try {
      const response = await postToken(broker.tokenEndpoint, {
        grant_type: TOKEN_EXCHANGE,
        subject_token: await idp.mint({ sub: 'alice', aud: broker.issuer }),
        subject_token_type: ID_TOKEN,
        ...(await client.auth(broker.tokenEndpoint)),
      });
      expectRefused(response, 400, 'invalid_request');
      expect(broker.audit.records.at(-1)!.reason).toContain('grant holds an audience or scope with characters that are not allowed');
    } finally {
      await broker.close();
    }
  });
});
