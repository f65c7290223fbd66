import { MemoryStateStore, StoreUnavailable, type StateStore } from '@tessera/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessTokenPlugin, allowRule, API, ID_TOKEN, LoopbackIssuer, oidcPlugin, postToken, startBroker, TestClient, TOKEN_EXCHANGE, type RunningBroker, type TokenCall } from './support.js';

/** The process edge: a store whose backend can be taken away, as a Redis outage does. */
class OutageStore implements StateStore {
  readonly kind = 'redis' as const;
  down = false;
  readonly #inner = new MemoryStateStore({ now: () => new Date() });

  #call<T>(run: () => Promise<T>): Promise<T> {
    return this.down ? Promise.reject(new StoreUnavailable()) : run();
  }
  claimOnce(key: string, ttlMs: number) {
    return this.#call(() => this.#inner.claimOnce(key, ttlMs));
  }
  put(key: string, value: string, ttlMs: number) {
    return this.#call(() => this.#inner.put(key, value, ttlMs));
  }
  getMany(keys: readonly string[]) {
    return this.#call(() => this.#inner.getMany(keys));
  }
  list(prefix: string) {
    return this.#call(() => this.#inner.list(prefix));
  }
  delete(key: string) {
    return this.#call(() => this.#inner.delete(key));
  }
  hit(key: string, windowMs: number) {
    return this.#call(() => this.#inner.hit(key, windowMs));
  }
  ping() {
    return this.#call(() => this.#inner.ping());
  }
  close() {
    return this.#inner.close();
  }
}

let idp: LoopbackIssuer;
let client: TestClient;
let running: RunningBroker;
const store = new OutageStore();
beforeAll(async () => {
  idp = await LoopbackIssuer.start();
  client = await TestClient.create();
  running = await startBroker(
    () => ({ clients: [client.config()], plugins: [oidcPlugin({ issuer: idp.issuer }), accessTokenPlugin], policy: { rules: [allowRule(idp.issuer)] }, endpoints: { jsonExchange: { enabled: true } } }),
    { store },
  );
});
afterAll(async () => {
  await Promise.all([running?.close(), idp?.close()]);
});

async function form(): Promise<Record<string, string>> {
  return { grant_type: TOKEN_EXCHANGE, subject_token: await idp.mint({ sub: 'alice', aud: running.issuer }), subject_token_type: ID_TOKEN, audience: API, ...(await client.auth(running.issuer)) };
}

async function json(): Promise<TokenCall> {
  const response = await fetch(`${running.issuer}/v1/exchange/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(await form()) });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text, body: JSON.parse(text) as Record<string, unknown> };
}

function expectUnavailable(call: TokenCall): void {
  expect(call.status).toBe(503);
  expect(call.body.error).toBe('temporarily_unavailable');
  expect(call.headers.get('retry-after')).toMatch(/^\d+$/);
  expect(call.body.access_token).toBeUndefined();
}

describe('a state store outage', () => {
  it('answers 503 with Retry-After at every door that depends on it, issues nothing, and recovers', async () => {
    const issued = await postToken(running.tokenEndpoint, await form());
    expect(issued.status).toBe(200);
    const token = issued.body.access_token as string;

    store.down = true;
    expectUnavailable(await postToken(running.tokenEndpoint, await form()));
    expectUnavailable(await json());
    expectUnavailable(await postToken(`${running.issuer}/introspect`, { token, ...(await client.auth(running.issuer)) }));
    expectUnavailable(await postToken(`${running.issuer}/revoke`, { token, ...(await client.auth(running.issuer)) }));
    const ready = await fetch(`${running.issuer}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ checks: { store: 'redis store unreachable' } });
    const denials = running.audit.records.slice(-2);
    expect(denials.map((record) => [record.decision, record.error])).toEqual([
      ['deny', 'temporarily_unavailable'],
      ['deny', 'temporarily_unavailable'],
    ]);
    expect(running.audit.records.some((record) => record.decision === 'deny' && record.error === 'server_error')).toBe(false);

    store.down = false;
    expect((await postToken(running.tokenEndpoint, await form())).status).toBe(200);
    expect((await json()).status).toBe(200);
    expect((await fetch(`${running.issuer}/readyz`)).status).toBe(200);
  });
});
