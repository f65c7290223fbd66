import { OAuthError } from '@tessera/plugin-sdk';
import { beforeEach, describe, expect, it } from 'vitest';
import type { RateLimit } from '../src/config/limits-schema.js';
import { silentLogger } from '../src/logging.js';
import { PromMetrics } from '../src/metrics.js';
import { ClientRateLimiter } from '../src/oauth/rate-limit.js';
import { MemoryStateStore } from '../src/state/memory-store.js';
import { StoreUnavailable, type StateStore } from '../src/state/store.js';

let t: number;
const clock = { now: () => new Date(t) };

beforeEach(() => {
  // 10 s into a minute: a 60 s window ends 50 s from now.
  t = Date.parse('2030-01-01T00:00:10Z');
});

function limiter(limits: Record<string, RateLimit>, store: StateStore = new MemoryStateStore(clock)) {
  const metrics = new PromMetrics();
  return { metrics, rateLimiter: new ClientRateLimiter({ store, clock, log: silentLogger, metrics, limitFor: (id) => limits[id] }) };
}

async function refusal(check: Promise<void>): Promise<OAuthError> {
  const error = await check.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  if (!(error instanceof OAuthError)) throw new Error(`expected an OAuthError, got ${String(error)}`);
  return error;
}

describe('ClientRateLimiter', () => {
  it('lets a client make its limit of requests in a window, then answers 429 with Retry-After to the end of the window', async () => {
    const { rateLimiter, metrics } = limiter({ 'client-a': { requests: 3, windowSeconds: 60 } });
    for (let n = 0; n < 3; n += 1) await expect(rateLimiter.check('client-a')).resolves.toBeUndefined();
    const error = await refusal(rateLimiter.check('client-a'));
    expect(error).toMatchObject({ code: 'temporarily_unavailable', status: 429, description: 'request rate limit exceeded, retry later', headers: { 'Retry-After': '50' } });
    expect(error.detail).toBe('rate limit: over 3 per 60s');
    t += 49_500;
    expect((await refusal(rateLimiter.check('client-a'))).headers['Retry-After']).toBe('1');
    expect((await metrics.exposition()).body).toContain('tessera_rate_limited_requests_total{reason="over_limit"} 2');
  });

  it('starts a fresh count in the next window', async () => {
    const { rateLimiter } = limiter({ 'client-a': { requests: 1, windowSeconds: 10 } });
    await rateLimiter.check('client-a');
    await refusal(rateLimiter.check('client-a'));
    t += 10_000;
    await expect(rateLimiter.check('client-a')).resolves.toBeUndefined();
  });

  it('counts each client on its own, and leaves clients without a limit alone', async () => {
    const { rateLimiter } = limiter({ 'client-a': { requests: 1, windowSeconds: 60 }, 'client-b': { requests: 1, windowSeconds: 60 } });
    await rateLimiter.check('client-a');
    await expect(rateLimiter.check('client-b')).resolves.toBeUndefined();
    await refusal(rateLimiter.check('client-a'));
    for (let n = 0; n < 100; n += 1) await rateLimiter.check('client-unlimited');
  });

  it('shares a budget between brokers that share a store (replicas behind one Redis)', async () => {
    const store = new MemoryStateStore(clock);
    const one = limiter({ 'client-a': { requests: 2, windowSeconds: 60 } }, store).rateLimiter;
    const two = limiter({ 'client-a': { requests: 2, windowSeconds: 60 } }, store).rateLimiter;
    await one.check('client-a');
    await two.check('client-a');
    expect((await refusal(one.check('client-a'))).status).toBe(429);
    expect((await refusal(two.check('client-a'))).status).toBe(429);
  });

  it('fails closed with 503 and Retry-After when the store cannot count', async () => {
    const down: StateStore = {
      kind: 'redis',
      claimOnce: () => Promise.reject(new StoreUnavailable()),
      put: () => Promise.reject(new StoreUnavailable()),
      getMany: () => Promise.reject(new StoreUnavailable()),
      list: () => Promise.reject(new StoreUnavailable()),
      delete: () => Promise.reject(new StoreUnavailable()),
      hit: () => Promise.reject(new StoreUnavailable()),
      ping: () => Promise.reject(new StoreUnavailable()),
      close: () => Promise.resolve(),
    };
    const { rateLimiter, metrics } = limiter({ 'client-a': { requests: 100, windowSeconds: 60 } }, down);
    const error = await refusal(rateLimiter.check('client-a'));
    expect(error).toMatchObject({ code: 'temporarily_unavailable', status: 503, detail: 'rate limit: state store unavailable' });
    expect(error.headers['Retry-After']).toMatch(/^\d+$/);
    expect((await metrics.exposition()).body).toContain('tessera_rate_limited_requests_total{reason="store_unavailable"} 1');
    // A client without a limit never needs the store.
    await expect(rateLimiter.check('client-unlimited')).resolves.toBeUndefined();
  });
});
