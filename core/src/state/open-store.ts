import type { Clock, Logger } from '@tessera/plugin-sdk';
import { ConfigError } from '../config/errors.js';
import type { BrokerConfig } from '../config/schema.js';
import type { StoreConfig } from '../config/store-schema.js';
import { MemoryStateStore } from './memory-store.js';
import type { StateStore } from './store.js';

/** The store `store:` configures. A Redis that is down does not stop startup: the broker starts not ready. */
export async function openStateStore(config: StoreConfig, deps: { clock: Clock; log?: Logger }): Promise<StateStore> {
  if (config.kind === 'memory') return new MemoryStateStore(deps.clock);
  // Loaded only here: ioredis is a tenth of a memory-store broker's start-up otherwise (docs/performance.md).
  const { RedisStateStore } = await import('./redis-store.js');
  return RedisStateStore.open(config, deps.log?.child({ component: 'store' }));
}

/**
 * Refuses a fleet on a memory store: each process would keep its own replay records and revocations, so
 * an assertion replayed at another worker would pass and a revoked token would stay good there. `workers`
 * is the number of processes `tessera serve` runs; `store.replicas` states how many replicas the operator
 * runs (the schema already refuses replicas > 1 with memory; this covers configs built in code too).
 */
export function checkStoreForFleet(config: Pick<BrokerConfig, 'store'>, workers = 1): void {
  if (config.store.kind !== 'memory') return;
  const problems: string[] = [];
  if (workers > 1) problems.push(`store.kind: memory cannot serve ${workers} workers: replay and revocation state would not be shared between them (use store.kind: redis)`);
  if (config.store.replicas > 1) problems.push(`store.replicas: ${config.store.replicas} replicas need a shared store (store.kind: redis); a memory store lives in one process`);
  if (problems.length > 0) throw new ConfigError(problems);
}
