import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { accessTokenPlugin, allowRule, LoopbackIssuer, oidcPlugin, startBroker, TestClient, type RunningBroker } from './support.js';

const NAMES = [
  'grant_type', 'subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'requested_token_type',
  'audience', 'resource', 'scope', 'assertion', 'client_id', 'client_secret', 'client_assertion', 'client_assertion_type',
];
const VALUES = [
  'urn:ietf:params:oauth:grant-type:token-exchange', 'urn:ietf:params:oauth:grant-type:jwt-bearer', 'client_credentials',
  'urn:ietf:params:oauth:token-type:jwt', 'urn:ietf:params:oauth:token-type:id_token', 'urn:ietf:params:oauth:token-type:access_token',
  'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', 'workload-a', 'eyJhbGciOiJub25lIn0.e30.', 'eyJ.eyJ.sig', 'a.b.c',
  'https://api.example.test', 'https://x/#f', '%', '\u0000', '\uD800', 'read write', '"', '\\',
];

let idp: LoopbackIssuer;
let running: RunningBroker;
let client: TestClient;
beforeAll(async () => {
  idp = await LoopbackIssuer.start();
  client = await TestClient.create('workload-a');
  running = await startBroker(() => ({
    clients: [client.config(), { id: 'public', auth: { method: 'none' } }],
    plugins: [oidcPlugin({ issuer: idp.issuer }), accessTokenPlugin],
    policy: { rules: [allowRule(idp.issuer)] },
    endpoints: { jsonExchange: { enabled: true } },
  }));
});
afterAll(async () => {
  await running.close();
  await idp.close();
});

it('answers any token request with a 4xx JSON error or a token, never a 5xx', async () => {
  const validIdToken = await idp.mint({ sub: 'a', aud: running.issuer }, { expiresIn: 3600 });
  const value = fc.oneof(fc.constantFrom(...VALUES, validIdToken), fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 20 }));
  const field = fc.tuple(fc.constantFrom(...NAMES, 'x'), value);
  await fc.assert(
    fc.asyncProperty(
      fc.array(field, { maxLength: 8 }),
      fc.constantFrom('application/x-www-form-urlencoded', 'application/x-www-form-urlencoded; charset=utf-8', 'text/plain', 'application/json', ''),
      fc.option(fc.constantFrom('Basic d29ya2xvYWQtYTp4', 'Basic %%%', 'Bearer abc', 'Basic ' + Buffer.from(':').toString('base64')), { nil: undefined }),
      async (fields, contentType, authorization) => {
        const body = new URLSearchParams(fields).toString();
        const headers: Record<string, string> = contentType ? { 'content-type': contentType } : {};
        if (authorization) headers.authorization = authorization;
        const response = await fetch(running.tokenEndpoint, { method: 'POST', headers, body });
        const text = await response.text();
        expect(response.status).toBeLessThan(500);
        const parsed = JSON.parse(text) as Record<string, unknown>;
        if (response.status !== 200) expect(parsed.error).toEqual(expect.any(String));
      },
    ),
    { numRuns: 300 },
  );
  expect(running.audit.records.every((record) => record.error !== 'server_error')).toBe(true);
});

it('answers any JSON exchange body with a 4xx JSON error or a token, never a 5xx', async () => {
  const validIdToken = await idp.mint({ sub: 'a', aud: running.issuer }, { expiresIn: 3600 });
  const scalar = fc.oneof(fc.constantFrom(...VALUES, validIdToken), fc.string({ maxLength: 40 }), fc.integer(), fc.boolean(), fc.constant(null));
  const member = fc.oneof(scalar, fc.array(scalar, { maxLength: 4 }), fc.dictionary(fc.string({ maxLength: 8 }), scalar, { maxKeys: 3 }));
  const body = fc.oneof(
    fc.dictionary(fc.constantFrom(...NAMES, '__proto__', 'constructor', 'x'), member, { maxKeys: 8 }).map((object) => JSON.stringify(object)),
    fc.json({ maxDepth: 3 }),
    fc.string({ maxLength: 60 }),
  );
  await fc.assert(
    fc.asyncProperty(body, fc.constantFrom('application/json', 'application/json; charset=utf-8', 'application/json; charset=latin1', 'text/plain'), async (text, contentType) => {
      const response = await fetch(`${running.issuer}/v1/exchange/token`, { method: 'POST', headers: { 'content-type': contentType }, body: text });
      expect(response.status).toBeLessThan(500);
      const parsed = JSON.parse(await response.text()) as Record<string, unknown>;
      if (response.status !== 200) expect(parsed.error).toEqual(expect.any(String));
    }),
    { numRuns: 300 },
  );
  expect(running.audit.records.every((record) => record.error !== 'server_error')).toBe(true);
});
