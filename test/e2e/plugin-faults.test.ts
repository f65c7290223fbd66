import { afterAll, beforeAll, expect, it } from 'vitest';
import { accessTokenPlugin, postToken, startBroker, TOKEN_EXCHANGE, type RunningBroker } from './support.js';

let running: RunningBroker;
beforeAll(async () => {
  running = await startBroker(
    () => ({
      clients: [{ id: 'public', auth: { method: 'none' } }],
      plugins: [{ use: './fixtures/sloppy-validator.mjs' }, accessTokenPlugin],
      policy: { rules: [{ id: 'team-a', match: { attributes: { team: 'a' } }, grant: { audiences: ['https://api.example.test'] } }] },
    }),
    { baseDir: import.meta.dirname },
  );
});
afterAll(() => running?.close());

const exchange = (token: string) =>
  postToken(running.tokenEndpoint, {
    grant_type: TOKEN_EXCHANGE,
    client_id: 'public',
    subject_token: token,
    subject_token_type: 'urn:example:token-type:sloppy',
    audience: 'https://api.example.test',
  });

it('fails closed with 400 when a validator returns a malformed identity, never a 5xx', async () => {
  for (const fault of ['numberAttribute', 'nullAttribute', 'noAttributes', 'stringExpiry', 'otherType', 'nothing']) {
    const response = await exchange(fault);
    expect([response.status, response.body.error], fault).toEqual([400, 'invalid_request']);
    expect(running.audit.records.at(-1), fault).toMatchObject({ decision: 'deny', reason: 'subject: validator plugin fault' });
  }
  expect((await exchange('good')).status).toBe(200);
});

it('fails closed when a client assertion verifier is faulty: 401 for bad output, 503 when it hangs', async () => {
  const broker = await startBroker(
    () => ({
      clients: [{ id: 'spiffe://example.org/**', auth: { method: 'spiffe_jwt' }, grantTypes: ['client_credentials'] }],
      plugins: [{ use: './fixtures/sloppy-assertion-verifier.mjs' }, accessTokenPlugin],
      limits: { validationTimeoutMs: 300 },
    }),
    { baseDir: import.meta.dirname },
  );
  try {
    const authenticate = (assertion: string) =>
      postToken(broker.tokenEndpoint, { grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe', client_assertion: assertion });
    for (const assertion of ['malformed', 'raw']) {
      const response = await authenticate(assertion);
      expect([response.status, response.body.error], assertion).toEqual([401, 'invalid_client']);
    }
    const hung = await authenticate('hang');
    expect([hung.status, hung.body.error]).toEqual([503, 'temporarily_unavailable']);
  } finally {
    await broker.close();
  }
});
