import { beforeEach, describe, expect, it } from 'vitest';
import { InMemoryReplayStore, REPLICA_CLOCK_SKEW_MS, StoreReplayStore } from '../src/oauth/replay-store.js';
import { MemoryStateStore } from '../src/state/memory-store.js';
import type { StateStore } from '../src/state/store.js';

let t: number;
const clock = { now: () => new Date(t) };
const at = (offsetMs: number) => new Date(t + offsetMs);

beforeEach(() => {
  t = Date.parse('2030-01-01T00:00:00Z');
});

describe('InMemoryReplayStore', () => {
  it('accepts a key once and refuses its replay before expiry', async () => {
    const store = new InMemoryReplayStore(clock);
    const expiresAt = at(60_000);
    await expect(store.consume('client-a:jti-1', expiresAt)).resolves.toBe(true);
    await expect(store.consume('client-a:jti-1', expiresAt)).resolves.toBe(false);
    t += 59_999;
    await expect(store.consume('client-a:jti-1', expiresAt)).resolves.toBe(false);
  });

  it('keeps keys independent', async () => {
    const store = new InMemoryReplayStore(clock);
    await expect(store.consume('client-a:jti-1', at(60_000))).resolves.toBe(true);
    await expect(store.consume('client-b:jti-1', at(60_000))).resolves.toBe(true);
    await expect(store.consume('client-a:jti-2', at(60_000))).resolves.toBe(true);
    expect(store.size).toBe(3);
  });

  it('accepts a key again once its entry has expired', async () => {
    const store = new InMemoryReplayStore(clock);
    await store.consume('jti', at(60_000));
    t += 60_000;
    await expect(store.consume('jti', at(60_000))).resolves.toBe(true);
    await expect(store.consume('jti', at(60_000))).resolves.toBe(false);
  });

  it('a replay does not extend the original entry', async () => {
    const store = new InMemoryReplayStore(clock);
    await store.consume('jti', at(10_000));
    await expect(store.consume('jti', at(3_600_000))).resolves.toBe(false);
    t += 10_000;
    await expect(store.consume('jti', at(10_000))).resolves.toBe(true);
  });

  it('sweeps expired entries at most once per interval', async () => {
    const store = new InMemoryReplayStore(clock, 1_000);
    await store.consume('short-1', at(500));
    await store.consume('short-2', at(500));
    await store.consume('long', at(60_000));
    expect(store.size).toBe(3);

    t += 600; // expired, but the next sweep is not due yet
    await store.consume('other', at(60_000));
    expect(store.size).toBe(4);

    t += 400;
    await store.consume('another', at(60_000));
    expect(store.size).toBe(3);
    await expect(store.consume('long', at(60_000))).resolves.toBe(false);

    t += 60_000;
    await store.consume('last', at(60_000));
    expect(store.size).toBe(1);
  });
});

/** A memory store presented as shared (kind redis): only the kind differs. */
function sharedStore(): StateStore {
  const memory = new MemoryStateStore(clock);
  return {
    kind: 'redis',
    claimOnce: (key, ttlMs) => memory.claimOnce(key, ttlMs),
    put: (key, value, ttlMs) => memory.put(key, value, ttlMs),
    getMany: (keys) => memory.getMany(keys),
    list: (prefix) => memory.list(prefix),
    delete: (key) => memory.delete(key),
    hit: (key, windowMs) => memory.hit(key, windowMs),
    ping: () => memory.ping(),
    close: () => memory.close(),
  };
}

describe('StoreReplayStore on a store shared between replicas', () => {
  it('keeps a record REPLICA_CLOCK_SKEW_MS past expiry, so a replica whose clock lags cannot accept it again', async () => {
    const shared = sharedStore();
    const store = new StoreReplayStore(shared, clock);
    const expiresAt = at(60_000);
    await expect(store.consume('jti', expiresAt)).resolves.toBe(true);
    t += 60_000 + REPLICA_CLOCK_SKEW_MS - 1;
    await expect(store.consume('jti', expiresAt)).resolves.toBe(false);
    t += 1;
    await expect(store.consume('jti', expiresAt)).resolves.toBe(true);
    expect(REPLICA_CLOCK_SKEW_MS).toBe(30_000);
  });

  it('remembers an assertion that expired by this clock a moment ago but not by a lagging one', async () => {
    const shared = sharedStore();
    const store = new StoreReplayStore(shared, clock);
    await expect(store.consume('late', at(-10_000))).resolves.toBe(true);
    await expect(store.consume('late', at(-10_000))).resolves.toBe(false);
  });
});
