import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { Logger } from '@tessera/plugin-sdk';
import type { RedisStoreConfig } from '../config/store-schema.js';
import { StoreUnavailable, StoreUnsafe, type StateStore } from './store.js';

/** SET with the later of the two expiries, in one step: a second revocation never shortens the first. */
const PUT_KEEPING_LATER_EXPIRY = `
local ttl = redis.call('PTTL', KEYS[1])
local wanted = tonumber(ARGV[2])
if ttl > wanted then wanted = ttl end
redis.call('SET', KEYS[1], ARGV[1], 'PX', wanted)
return 1`;

/** INCR plus an expiry set only by the window's first hit (PEXPIRE NX, for Redis before 7 too). */
const HIT_IN_WINDOW = `
local count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count`;

type Client = (Redis | Cluster) & {
  tesseraPut(key: string, value: string, ttlMs: number): Promise<number>;
  tesseraHit(key: string, windowMs: number): Promise<number>;
};

/**
 * Reconnection never gives up: the broker answers 503 meanwhile and recovers by itself when Redis returns.
 * Equal jitter (half the backoff fixed, half random): replicas that lost Redis together do not all knock
 * again in the same millisecond.
 */
export const reconnectDelay = (attempt: number, random: () => number = Math.random) => {
  const backoff = Math.min(100 * attempt, 2_000);
  return Math.round(backoff / 2 + random() * (backoff / 2));
};

/** The only eviction policy under which Redis never drops a key before its TTL: every key the broker writes has one. */
const REQUIRED_EVICTION_POLICY = 'noeviction';
const EVICTION_PROBLEM = 'redis maxmemory-policy must be noeviction';

/** SCAN MATCH treats these as glob syntax; a prefix must match only itself. */
const escapeGlob = (text: string) => text.replace(/[*?[\]\\]/g, '\\$&');

/**
 * State shared through Redis (standalone, Sentinel or Cluster). Commands are bounded by
 * `commandTimeoutMs` and are never queued while disconnected, so a stalled or absent Redis fails each
 * caller fast with `StoreUnavailable` instead of holding requests.
 */
export class RedisStateStore implements StateStore {
  readonly kind = 'redis' as const;
  readonly #client: Client;
  readonly #prefix: string;
  readonly #cluster: boolean;
  readonly #log: Logger | undefined;
  #connected = false;
  /** Whether the eviction problem has been logged since it was last seen fixed: one line, not one per probe. */
  #evictionLogged = false;

  private constructor(client: Client, config: RedisStoreConfig, log: Logger | undefined) {
    this.#client = client;
    this.#prefix = config.keyPrefix;
    this.#cluster = client instanceof Cluster;
    this.#log = log;
    client.defineCommand('tesseraPut', { numberOfKeys: 1, lua: PUT_KEEPING_LATER_EXPIRY });
    client.defineCommand('tesseraHit', { numberOfKeys: 1, lua: HIT_IN_WINDOW });
    // Logged on each change of state only: an outage is one line, not one per retry.
    client.on('ready', () => {
      if (!this.#connected) log?.info({ store: 'redis' }, 'state store connected');
      this.#connected = true;
      // Checked on every (re)connect: a failover may land on a server configured differently.
      this.#checkEviction().catch(() => undefined);
    });
    client.on('error', (error: Error) => {
      if (this.#connected) log?.error({ store: 'redis', err: { message: error.message } }, 'state store unreachable: requests that need it get 503 until it returns');
      this.#connected = false;
    });
    client.on('close', () => {
      if (this.#connected) log?.error({ store: 'redis' }, 'state store connection closed: requests that need it get 503 until it returns');
      this.#connected = false;
    });
  }

  /** Connects, waiting at most `connectTimeoutMs`; a Redis that is down at startup is retried in the background. */
  static async open(config: RedisStoreConfig, log?: Logger): Promise<RedisStateStore> {
    const store = new RedisStateStore(createClient(config), config, log);
    const ready = await store.#waitReady(config.connectTimeoutMs);
    if (!ready) log?.warn({ store: 'redis' }, 'state store not reachable at startup: not ready, requests that need it get 503 until it answers');
    return store;
  }

  claimOnce(key: string, ttlMs: number): Promise<boolean> {
    return this.#run(async () => (await this.#client.set(this.#key(key), '1', 'PX', wholeMs(ttlMs), 'NX')) === 'OK');
  }

  put(key: string, value: string, ttlMs: number): Promise<void> {
    if (ttlMs <= 0) return Promise.resolve();
    return this.#run(async () => void (await this.#client.tesseraPut(this.#key(key), value, wholeMs(ttlMs))));
  }

  getMany(keys: readonly string[]): Promise<(string | undefined)[]> {
    if (keys.length === 0) return Promise.resolve([]);
    return this.#run(async () => {
      const full = keys.map((key) => this.#key(key));
      // MGET spans hash slots only outside a cluster; there, auto-pipelining still sends the GETs together.
      const values = this.#cluster ? await Promise.all(full.map((key) => this.#client.get(key))) : await this.#client.mget(full);
      return values.map((value) => value ?? undefined);
    });
  }

  list(prefix: string): Promise<{ key: string; value: string; expiresAt: Date }[]> {
    return this.#run(async () => {
      const nodes = this.#nodes();
      const keys = new Set<string>();
      for (const node of nodes) {
        let cursor = '0';
        do {
          const [next, found] = await node.scan(cursor, 'MATCH', `${escapeGlob(this.#key(prefix))}*`, 'COUNT', 500);
          for (const key of found) keys.add(key);
          cursor = next;
        } while (cursor !== '0');
      }
      const now = Date.now();
      const entries = await Promise.all(
        [...keys].map(async (key) => {
          const [value, ttl] = await Promise.all([this.#client.get(key), this.#client.pttl(key)]);
          return value === null || ttl < 0 ? [] : [{ key: key.slice(this.#prefix.length), value, expiresAt: new Date(now + ttl) }];
        }),
      );
      return entries.flat();
    });
  }

  delete(key: string): Promise<void> {
    return this.#run(async () => void (await this.#client.del(this.#key(key))));
  }

  hit(key: string, windowMs: number): Promise<number> {
    return this.#run(() => this.#client.tesseraHit(this.#key(key), wholeMs(windowMs)));
  }

  /** Also rejects, with `StoreUnsafe`, while Redis may evict keys: readiness then says why. */
  async ping(): Promise<void> {
    await this.#run(async () => void (await this.#client.ping()));
    await this.#checkEviction();
  }

  async close(): Promise<void> {
    try {
      await Promise.race([this.#client.quit(), new Promise((done) => setTimeout(done, 1_000).unref())]);
    } catch {
      // Not connected: nothing to say goodbye to.
    } finally {
      this.#client.disconnect();
    }
  }

  /** Every node holding keys; none while a cluster is disconnected, which is an outage, not an empty list. */
  #nodes(): Redis[] {
    if (!(this.#client instanceof Cluster)) return [this.#client as Redis];
    const masters = this.#client.nodes('master');
    if (masters.length === 0) throw new StoreUnavailable('no cluster master reachable');
    return masters;
  }

  /**
   * Revocations, kill-switch entries and replay records all carry a TTL, so any `volatile-*` or
   * `allkeys-*` policy (the default of some managed Redis) may drop one under memory pressure: a revoked
   * token would pass again, a used assertion would be accepted again. INFO is read rather than CONFIG GET,
   * which managed services often disable.
   */
  async #checkEviction(): Promise<void> {
    const policies = await this.#run(() => Promise.all(this.#nodes().map(async (node) => evictionPolicy(await node.info('memory')))));
    if (policies.every((policy) => policy === REQUIRED_EVICTION_POLICY)) {
      this.#evictionLogged = false;
      return;
    }
    if (!this.#evictionLogged) {
      this.#evictionLogged = true;
      const found = policies.find((policy) => policy !== REQUIRED_EVICTION_POLICY) ?? 'unknown';
      this.#log?.error({ store: 'redis', maxmemoryPolicy: found }, 'state store not ready: redis maxmemory-policy must be noeviction, or revocations and replay records may be evicted');
    }
    throw new StoreUnsafe(EVICTION_PROBLEM);
  }

  #key(key: string): string {
    return this.#prefix + key;
  }

  async #run<T>(command: () => Promise<T>): Promise<T> {
    try {
      return await command();
    } catch (error) {
      if (error instanceof StoreUnavailable) throw error;
      throw new StoreUnavailable('state store unavailable', { cause: error });
    }
  }

  #waitReady(timeoutMs: number): Promise<boolean> {
    if (this.#client.status === 'ready') return Promise.resolve(true);
    return new Promise((done) => {
      const timer = setTimeout(() => finish(false), timeoutMs);
      timer.unref();
      const finish = (ready: boolean) => {
        clearTimeout(timer);
        this.#client.off('ready', onReady);
        done(ready);
      };
      const onReady = () => finish(true);
      this.#client.on('ready', onReady);
    });
  }
}

function wholeMs(ms: number): number {
  return Math.max(1, Math.ceil(ms));
}

/** How to reach Redis, as ioredis options: one server, a Sentinel-monitored master, or a Cluster. */
export type RedisClientPlan =
  | { readonly mode: 'standalone'; readonly url: string; readonly options: RedisOptions }
  | { readonly mode: 'sentinel'; readonly options: RedisOptions }
  | { readonly mode: 'cluster'; readonly nodes: readonly { host: string; port: number }[]; readonly options: ClusterOptions };

/** The ioredis options a config maps to; pure, so the mapping (TLS above all) is tested without a Redis. */
export function redisClientPlan(config: RedisStoreConfig): RedisClientPlan {
  const tls = config.tls || config.url?.startsWith('rediss:') ? tlsOptions(config) : undefined;
  const common: RedisOptions = {
    commandTimeout: config.commandTimeoutMs,
    connectTimeout: config.connectTimeoutMs,
    // Fail, don't queue: a request waiting on a Redis that is away would hold its connection.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    enableAutoPipelining: true,
    retryStrategy: (attempt) => reconnectDelay(attempt),
    ...(config.username ? { username: config.username } : {}),
    ...(config.password ? { password: config.password } : {}),
    ...(tls ? { tls } : {}),
  };
  if (config.cluster) {
    const { retryStrategy: _unused, enableOfflineQueue: _queue, ...nodeOptions } = common;
    return {
      mode: 'cluster',
      nodes: config.cluster.nodes,
      options: { enableOfflineQueue: false, enableAutoPipelining: true, clusterRetryStrategy: (attempt) => reconnectDelay(attempt), redisOptions: nodeOptions },
    };
  }
  if (config.sentinel) {
    const { sentinel } = config;
    return {
      mode: 'sentinel',
      options: {
        ...common,
        name: sentinel.masterName,
        sentinels: sentinel.sentinels,
        sentinelRetryStrategy: (attempt) => reconnectDelay(attempt),
        ...(sentinel.username ? { sentinelUsername: sentinel.username } : {}),
        ...(sentinel.password ? { sentinelPassword: sentinel.password } : {}),
        // ioredis uses `tls` for the master only with this flag: without it the master link (password,
        // every revocation read) would be plaintext while store.tls says otherwise.
        ...(tls ? { enableTLSForSentinelMode: true } : {}),
        // The sentinels' own TLS is separate: sentinel.tls, with the same trust settings.
        ...(sentinel.tls ? { sentinelTLS: tlsOptions(config) } : {}),
      },
    };
  }
  return { mode: 'standalone', url: config.url!, options: common };
}

function createClient(config: RedisStoreConfig): Client {
  const plan = redisClientPlan(config);
  switch (plan.mode) {
    case 'cluster':
      return new Cluster([...plan.nodes], plan.options) as Client;
    case 'sentinel':
      return new Redis(plan.options) as Client;
    case 'standalone':
      return new Redis(plan.url, plan.options) as Client;
  }
}

function evictionPolicy(info: string): string | undefined {
  return /^maxmemory_policy:(\S+)/m.exec(info)?.[1];
}

function tlsOptions(config: RedisStoreConfig): NonNullable<RedisOptions['tls']> {
  const tls = config.tls;
  return {
    rejectUnauthorized: true,
    ...(tls?.ca ? { ca: tls.ca } : {}),
    ...(tls?.cert ? { cert: tls.cert } : {}),
    ...(tls?.key ? { key: tls.key } : {}),
    ...(tls?.servername ? { servername: tls.servername } : {}),
  };
}
