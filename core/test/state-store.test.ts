import { randomUUID } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { TemporarilyUnavailable, type Logger } from '@tessera/plugin-sdk';
import { systemClock } from '../src/clock.js';
import { storeConfigSchema, type RedisStoreConfig } from '../src/config/store-schema.js';
import { StoreReplayStore } from '../src/oauth/replay-store.js';
import { StoreRevocationList } from '../src/oauth/revocation.js';
import { MemoryStateStore } from '../src/state/memory-store.js';
import { reconnectDelay, redisClientPlan, RedisStateStore } from '../src/state/redis-store.js';
import { StoreUnavailable, StoreUnsafe, type StateStore } from '../src/state/store.js';
import { parseConfigText } from '../src/config/load.js';
import { freePort, RedisServer, redisSkipReason } from '../../test/src/redis-server.js';
import { TestPki } from './support/test-pki.js';

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

const skipRedis = redisSkipReason();
let redis: RedisServer | undefined;
beforeAll(async () => {
  if (!skipRedis) redis = await RedisServer.start();
}, 30_000);
afterAll(async () => {
  await redis?.stop();
});

function redisConfig(overrides: Partial<RedisStoreConfig> = {}): RedisStoreConfig {
  return storeConfigSchema.parse({ kind: 'redis', url: redis?.url ?? 'redis://127.0.0.1:1', keyPrefix: `test.${randomUUID()}:`, ...overrides }) as RedisStoreConfig;
}

const opened: StateStore[] = [];
afterAll(async () => {
  await Promise.all(opened.map((store) => store.close()));
});

const backends: { name: string; open: () => Promise<StateStore> }[] = [
  { name: 'memory', open: async () => new MemoryStateStore(systemClock, 10) },
  { name: 'redis', open: async () => RedisStateStore.open(redisConfig()) },
];

// One contract, both backends: whatever the broker relies on holds for the embedded store and for Redis.
describe.each(backends)('StateStore contract: $name', ({ name, open }) => {
  let store: StateStore;
  beforeEach(async (ctx) => {
    if (name === 'redis' && skipRedis) return ctx.skip(skipRedis);
    store = await open();
    opened.push(store);
  });

  it('claims a key once', async () => {
    await expect(store.claimOnce('a', 60_000)).resolves.toBe(true);
    await expect(store.claimOnce('a', 60_000)).resolves.toBe(false);
    await expect(store.claimOnce('b', 60_000)).resolves.toBe(true);
  });

  it('lets exactly one of many concurrent claims of a key succeed', async () => {
    const claims = await Promise.all(Array.from({ length: 50 }, () => store.claimOnce('raced', 60_000)));
    expect(claims.filter(Boolean)).toHaveLength(1);
  });

  it('forgets a claim when it expires', async () => {
    await store.claimOnce('short', 80);
    await sleep(150);
    await expect(store.claimOnce('short', 60_000)).resolves.toBe(true);
  });

  it('reads many keys in order, undefined where absent or expired', async () => {
    await store.put('x', 'one', 60_000);
    await store.put('y', 'two', 60_000);
    await store.put('gone', 'three', 50);
    await sleep(120);
    await expect(store.getMany(['y', 'missing', 'x', 'gone'])).resolves.toEqual(['two', undefined, 'one', undefined]);
    await expect(store.getMany([])).resolves.toEqual([]);
  });

  it('keeps the later expiry when a key is put again, with the new value', async () => {
    await store.put('k', 'first', 60_000);
    await store.put('k', 'second', 50);
    await sleep(120);
    await expect(store.getMany(['k'])).resolves.toEqual(['second']);
    const [entry] = await store.list('k');
    expect(entry!.expiresAt.getTime()).toBeGreaterThan(Date.now() + 55_000);
    // A longer one extends it.
    await store.put('k', 'third', 120_000);
    const [extended] = await store.list('k');
    expect(extended!.expiresAt.getTime()).toBeGreaterThan(Date.now() + 115_000);
  });

  it('ignores a put that has already expired', async () => {
    await store.put('past', 'v', 0);
    await expect(store.getMany(['past'])).resolves.toEqual([undefined]);
  });

  it('lists unexpired entries under a prefix, with their expiry, and only those', async () => {
    await store.put('kill:a', '1', 60_000);
    await store.put('kill:b', '2', 30_000);
    await store.put('kill*c', 'glob', 60_000);
    await store.put('other:a', '3', 60_000);
    await store.put('kill:old', '4', 50);
    await sleep(120);
    const listed = (await store.list('kill:')).sort((p, q) => p.key.localeCompare(q.key));
    expect(listed.map(({ key, value }) => [key, value])).toEqual([
      ['kill:a', '1'],
      ['kill:b', '2'],
    ]);
    expect(listed[1]!.expiresAt.getTime()).toBeGreaterThan(Date.now() + 25_000);
    expect(listed[1]!.expiresAt.getTime()).toBeLessThanOrEqual(Date.now() + 30_000);
    // A prefix is literal text, not a pattern.
    expect((await store.list('kill*')).map(({ key }) => key)).toEqual(['kill*c']);
  });

  it('deletes', async () => {
    await store.put('d', 'v', 60_000);
    await store.delete('d');
    await store.delete('never-there');
    await expect(store.getMany(['d'])).resolves.toEqual([undefined]);
  });

  it('counts hits in a fixed window that starts with the first hit', async () => {
    expect(await store.hit('w', 150)).toBe(1);
    expect(await store.hit('w', 150)).toBe(2);
    const concurrent = await Promise.all(Array.from({ length: 20 }, () => store.hit('w', 150)));
    expect(Math.max(...concurrent)).toBe(22);
    expect(new Set(concurrent).size).toBe(20);
    await sleep(220);
    expect(await store.hit('w', 150)).toBe(1);
  });

  it('answers a ping', async () => {
    await expect(store.ping()).resolves.toBeUndefined();
  });
});

describe('RedisStateStore', () => {
  beforeEach((ctx) => {
    if (skipRedis) ctx.skip(skipRedis);
  });

  it('keeps brokers with different key prefixes apart, and shares state between stores on one prefix', async () => {
    const prefix = `shared.${randomUUID()}:`;
    const [a, b, other] = await Promise.all([RedisStateStore.open(redisConfig({ keyPrefix: prefix })), RedisStateStore.open(redisConfig({ keyPrefix: prefix })), RedisStateStore.open(redisConfig())]);
    opened.push(a, b, other);
    await expect(a.claimOnce('jti', 60_000)).resolves.toBe(true);
    await expect(b.claimOnce('jti', 60_000)).resolves.toBe(false);
    await expect(other.claimOnce('jti', 60_000)).resolves.toBe(true);
    await a.put('kill:x', 'v', 60_000);
    expect((await b.list('kill:')).map(({ key }) => key)).toEqual(['kill:x']);
    await expect(other.list('kill:')).resolves.toEqual([]);
  });

  it('fails fast with StoreUnavailable when nothing listens, and does not hold startup', async () => {
    const started = Date.now();
    const store = await RedisStateStore.open(redisConfig({ url: `redis://127.0.0.1:${await freePort()}`, connectTimeoutMs: 300 }));
    opened.push(store);
    await expect(store.claimOnce('k', 1_000)).rejects.toBeInstanceOf(StoreUnavailable);
    await expect(store.getMany(['k'])).rejects.toBeInstanceOf(StoreUnavailable);
    await expect(store.ping()).rejects.toBeInstanceOf(StoreUnavailable);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('fails a command on a stalled Redis within the command timeout, then recovers by itself', async () => {
    const store = await RedisStateStore.open(redisConfig({ commandTimeoutMs: 200 }));
    opened.push(store);
    await store.put('k', 'v', 60_000);
    redis!.pause();
    try {
      const started = Date.now();
      await expect(store.getMany(['k'])).rejects.toBeInstanceOf(StoreUnavailable);
      expect(Date.now() - started).toBeLessThan(1_000);
    } finally {
      redis!.resume();
    }
    await expect(store.getMany(['k'])).resolves.toEqual(['v']);
  });

  it('reconnects by itself after Redis restarts', async () => {
    const own = await RedisServer.start();
    try {
      const store = await RedisStateStore.open(redisConfig({ url: own.url }));
      opened.push(store);
      await expect(store.claimOnce('before', 60_000)).resolves.toBe(true);
      await own.stop();
      await expect(store.claimOnce('during', 60_000)).rejects.toBeInstanceOf(StoreUnavailable);
      await own.restart();
      const deadline = Date.now() + 10_000;
      let answered = false;
      while (!answered && Date.now() < deadline) {
        answered = await store.ping().then(() => true, () => false);
        if (!answered) await sleep(50);
      }
      expect(answered).toBe(true);
      await expect(store.claimOnce('after', 60_000)).resolves.toBe(true);
    } finally {
      await own.stop();
    }
  });

  it('turns an outage into temporarily_unavailable for the replay store and the revocation list, never into an answer', async () => {
    const store = await RedisStateStore.open(redisConfig({ url: `redis://127.0.0.1:${await freePort()}`, connectTimeoutMs: 200 }));
    opened.push(store);
    const replay = new StoreReplayStore(store, systemClock);
    const revocations = new StoreRevocationList(store, systemClock);
    const later = new Date(Date.now() + 60_000);
    for (const call of [replay.consume('k', later), revocations.isRevoked('jti'), revocations.revoke('jti', later)]) {
      const error = await call.then(() => undefined, (caught: unknown) => caught);
      expect(error).toBeInstanceOf(TemporarilyUnavailable);
      expect((error as TemporarilyUnavailable).status).toBe(503);
      expect((error as TemporarilyUnavailable).headers['Retry-After']).toBeDefined();
    }
  });
});

describe('RedisStateStore eviction policy', () => {
  beforeEach((ctx) => {
    if (skipRedis) ctx.skip(skipRedis);
  });

  /** The process edge: a logger that keeps what it was told. */
  function recordingLogger(): Logger & { errors: string[] } {
    const errors: string[] = [];
    const log: Logger & { errors: string[] } = {
      errors,
      debug: () => undefined,
      info: () => undefined,
      warn: () => undefined,
      error: (_fields, message) => void errors.push(message ?? ''),
      child: () => log,
    };
    return log;
  }

  it('is not ready on a Redis that may evict keys with a TTL (volatile-lru), and says why once in the log', async () => {
    const evicting = await RedisServer.start({ maxmemoryPolicy: 'volatile-lru' });
    try {
      const log = recordingLogger();
      const store = await RedisStateStore.open(redisConfig({ url: evicting.url }), log);
      opened.push(store);
      for (let probe = 0; probe < 3; probe++) {
        const error = await store.ping().then(() => undefined, (caught: unknown) => caught);
        expect(error).toBeInstanceOf(StoreUnsafe);
        expect((error as Error).message).toBe('redis maxmemory-policy must be noeviction');
      }
      expect(log.errors.filter((message) => message.includes('maxmemory-policy'))).toHaveLength(1);
    } finally {
      await evicting.stop();
    }
  });

  it('is ready on the default noeviction', async () => {
    const log = recordingLogger();
    const store = await RedisStateStore.open(redisConfig(), log);
    opened.push(store);
    await expect(store.ping()).resolves.toBeUndefined();
    expect(log.errors).toEqual([]);
  });
});

describe('RedisStateStore over TLS with a password, both from ${file:} secrets', () => {
  let pki: TestPki;
  let secure: RedisServer | undefined;
  let dir: string;
  beforeAll(async () => {
    if (skipRedis) return;
    pki = await TestPki.create();
    secure = await RedisServer.start({ tls: await pki.issue(), password: 'correct horse battery staple' });
    dir = await mkdtemp(join(tmpdir(), 'tessera-redis-secrets-'));
    await writeFile(join(dir, 'redis-password'), 'correct horse battery staple\n', { mode: 0o600 });
    await writeFile(join(dir, 'redis-ca.pem'), pki.caPem);
    await writeFile(join(dir, 'wrong-password'), 'guess\n', { mode: 0o600 });
    await writeFile(join(dir, 'other-ca.pem'), (await TestPki.create('Someone else')).caPem);
  }, 60_000);
  afterAll(async () => {
    await secure?.stop();
  });
  beforeEach((ctx) => {
    if (skipRedis) ctx.skip(skipRedis);
  });

  const storeFrom = (password: string, ca: string) => {
    const text = [
      'issuer: https://broker.example.com',
      'store:',
      '  kind: redis',
      `  url: ${secure!.url}`,
      `  password: \${file:${password}}`,
      '  connectTimeoutMs: 1000',
      '  tls:',
      `    ca: \${file:${ca}}`,
    ].join('\n');
    const { config } = parseConfigText(text, { file: 'broker.yaml', baseDir: dir });
    return RedisStateStore.open(config.store as RedisStoreConfig);
  };

  it('connects with the CA and password the config names', async () => {
    const store = await storeFrom('redis-password', 'redis-ca.pem');
    opened.push(store);
    await expect(store.claimOnce('tls', 60_000)).resolves.toBe(true);
    await expect(store.claimOnce('tls', 60_000)).resolves.toBe(false);
  });

  it('fails closed on a wrong password or a server certificate from another CA', async () => {
    for (const [password, ca] of [
      ['wrong-password', 'redis-ca.pem'],
      ['redis-password', 'other-ca.pem'],
    ] as const) {
      const store = await storeFrom(password, ca);
      opened.push(store);
      await expect(store.claimOnce('tls', 60_000)).rejects.toBeInstanceOf(StoreUnavailable);
    }
  });
});

describe('Redis client options', () => {
  const tls = { ca: '-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----' };
  const sentinel = (overrides: Record<string, unknown>) =>
    redisClientPlan(storeConfigSchema.parse({ kind: 'redis', sentinel: { masterName: 'main', sentinels: [{ host: 's1' }], ...(overrides.sentinel as object) }, ...(overrides.tls ? { tls: overrides.tls } : {}) }) as RedisStoreConfig).options as Record<string, unknown>;

  it('speaks TLS to a Sentinel-found master whenever store.tls is set, whatever sentinel.tls says', () => {
    const masterOnly = sentinel({ tls });
    expect(masterOnly.enableTLSForSentinelMode).toBe(true);
    expect(masterOnly.tls).toMatchObject({ rejectUnauthorized: true, ca: tls.ca });
    expect(masterOnly.sentinelTLS).toBeUndefined();

    const both = sentinel({ tls, sentinel: { tls: true } });
    expect(both.enableTLSForSentinelMode).toBe(true);
    expect(both.tls).toMatchObject({ rejectUnauthorized: true, ca: tls.ca });
    expect(both.sentinelTLS).toMatchObject({ rejectUnauthorized: true, ca: tls.ca });
  });

  it('refuses TLS to the sentinels without store.tls: the master link would stay plaintext', () => {
    const parsed = storeConfigSchema.safeParse({ kind: 'redis', sentinel: { masterName: 'main', sentinels: [{ host: 's1' }], tls: true } });
    expect(parsed.success).toBe(false);
    expect(parsed.error?.issues).toEqual([expect.objectContaining({ path: ['sentinel', 'tls'], message: 'sentinel.tls needs store.tls too, or the master link stays plaintext' })]);

    const plain = sentinel({});
    expect(plain.enableTLSForSentinelMode).toBeUndefined();
    expect(plain.tls).toBeUndefined();
    expect(plain.sentinelTLS).toBeUndefined();
  });

  it('turns TLS on for a rediss:// URL and for Cluster nodes with store.tls', () => {
    const standalone = redisClientPlan(storeConfigSchema.parse({ kind: 'redis', url: 'rediss://redis.internal:6380' }) as RedisStoreConfig);
    expect(standalone.options).toMatchObject({ tls: { rejectUnauthorized: true } });
    const cluster = redisClientPlan(storeConfigSchema.parse({ kind: 'redis', cluster: { nodes: [{ host: 'c1' }] }, tls }) as RedisStoreConfig);
    expect(cluster.mode === 'cluster' && cluster.options.redisOptions).toMatchObject({ tls: { rejectUnauthorized: true, ca: tls.ca } });
  });

  it('spreads reconnection delays with jitter, within half to all of the capped backoff', () => {
    expect(reconnectDelay(1, () => 0)).toBe(50);
    expect(reconnectDelay(1, () => 1)).toBe(100);
    expect(reconnectDelay(50, () => 0)).toBe(1_000);
    expect(reconnectDelay(50, () => 1)).toBe(2_000);
    const delays = Array.from({ length: 50 }, () => reconnectDelay(10));
    expect(new Set(delays).size).toBeGreaterThan(1);
    expect(delays.every((delay) => delay >= 500 && delay <= 1_000)).toBe(true);
  });

  it('fails list() on a Cluster with no reachable master instead of answering an empty list', async () => {
    const store = await RedisStateStore.open(redisConfig({ url: undefined, cluster: { nodes: [{ host: '127.0.0.1', port: await freePort() }] }, connectTimeoutMs: 200 } as Partial<RedisStoreConfig>));
    opened.push(store);
    await expect(store.list('kill:')).rejects.toBeInstanceOf(StoreUnavailable);
  });
});

describe('store config', () => {
  it('defaults to memory for one process', () => {
    expect(storeConfigSchema.parse(undefined)).toEqual({ kind: 'memory', replicas: 1 });
  });

  it('refuses replicas with a memory store, credentials in a Redis URL, and more than one way to reach Redis', () => {
    expect(storeConfigSchema.safeParse({ kind: 'memory', replicas: 3 }).success).toBe(false);
    expect(storeConfigSchema.safeParse({ kind: 'redis', url: 'redis://user:secret@127.0.0.1:6379' }).success).toBe(false);
    expect(storeConfigSchema.safeParse({ kind: 'redis', url: 'redis://127.0.0.1', cluster: { nodes: [{ host: 'a' }] } }).success).toBe(false);
    expect(storeConfigSchema.safeParse({ kind: 'redis' }).success).toBe(false);
    expect(storeConfigSchema.safeParse({ kind: 'redis', url: 'redis://127.0.0.1:6379/2', replicas: 3 }).success).toBe(true);
  });
});
