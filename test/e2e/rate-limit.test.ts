import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MemoryStateStore, StoreUnavailable, type StateStore } from '@tessera/core';
import { accessTokenPlugin, allowRule, API, generateTestKey, ID_TOKEN, LoopbackIssuer, oidcPlugin, postToken, startBroker, TestClient, TOKEN_EXCHANGE, type RunningBroker, type TokenCall } from './support.js';

let idp: LoopbackIssuer;
let limited: TestClient;
let defaulted: TestClient;
let running: RunningBroker | undefined;

beforeAll(async () => {
  idp = await LoopbackIssuer.start();
  limited = await TestClient.create('client-limited');
  defaulted = await TestClient.create('client-defaulted');
});
afterAll(async () => {
  await idp?.close();
});
afterEach(async () => {
  await running?.close();
  running = undefined;
});

async function start(store?: StateStore): Promise<RunningBroker> {
  running = await startBroker(
    () => ({
      clients: [{ ...limited.config(['token_exchange']), rateLimit: { requests: 2, windowSeconds: 3_600 } }, defaulted.config(['token_exchange'])],
      plugins: [oidcPlugin({ issuer: idp.issuer }), accessTokenPlugin],
      policy: { rules: [allowRule(idp.issuer)] },
      limits: { perClient: { requests: 3, windowSeconds: 3_600 } },
    }),
    store ? { store } : {},
  );
  return running;
}

async function exchange(broker: RunningBroker, client: TestClient, auth?: Record<string, string>): Promise<TokenCall> {
  return postToken(broker.tokenEndpoint, {
    grant_type: TOKEN_EXCHANGE,
    subject_token: await idp.mint({ sub: 'alice', aud: broker.issuer }),
    subject_token_type: ID_TOKEN,
    audience: API,
    ...(auth ?? (await client.auth(broker.issuer))),
  });
}

/** A store down for counting only, so client authentication (its replay records) still works. */
class CountingDown extends MemoryStateStore {
  override hit(): Promise<number> {
    return Promise.reject(new StoreUnavailable());
  }
}

function expectRefused(call: TokenCall, status: number): void {
  expect({ status: call.status, error: call.body.error }).toEqual({ status, error: 'temporarily_unavailable' });
  expect(call.body).not.toHaveProperty('access_token');
  expect(Object.keys(call.body).sort()).toEqual(['error', 'error_description']);
  expect(call.headers.get('retry-after')).toMatch(/^[1-9]\d*$/);
}

describe('per-client rate limits', () => {
  it('answers 429 with Retry-After to the end of the window once a client spent its own limit, and audits the refusal', async () => {
    const broker = await start();
    for (let n = 0; n < 2; n += 1) expect((await exchange(broker, limited)).status).toBe(200);
    const refused = await exchange(broker, limited);
    expectRefused(refused, 429);
    expect(refused.body.error_description).toBe('request rate limit exceeded, retry later');
    expect(Number(refused.headers.get('retry-after'))).toBeLessThanOrEqual(3_600);
    expect(broker.audit.records.at(-1)).toMatchObject({ decision: 'deny', error: 'temporarily_unavailable', reason: 'rate limit: over 2 per 3600s', client: { id: 'client-limited' } });
    expect(await (await fetch(`${broker.issuer}/metrics`)).text()).toContain('tessera_rate_limited_requests_total{reason="over_limit"} 1');
    // Another client's budget is its own: limits.perClient (3) applies to it.
    for (let n = 0; n < 3; n += 1) expect((await exchange(broker, defaulted)).status).toBe(200);
    expectRefused(await exchange(broker, defaulted), 429);
  });

  it('counts only authenticated requests: requests naming a client without its key cannot spend its budget', async () => {
    const broker = await start();
    const stranger = await generateTestKey('ES256');
    for (let n = 0; n < 5; n += 1) {
      const forged = await exchange(broker, limited, { client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: await limited.assertion(broker.tokenEndpoint, {}, { key: stranger }) });
      expect({ status: forged.status, error: forged.body.error }).toEqual({ status: 401, error: 'invalid_client' });
    }
    for (let n = 0; n < 2; n += 1) expect((await exchange(broker, limited)).status).toBe(200);
  });

  it('fails closed with 503 and Retry-After when the state store cannot count', async () => {
    const broker = await start(new CountingDown({ now: () => new Date() }));
    const refused = await exchange(broker, limited);
    expectRefused(refused, 503);
    expect(broker.audit.records.at(-1)).toMatchObject({ decision: 'deny', error: 'temporarily_unavailable', reason: 'rate limit: state store unavailable' });
  });
});
