import type { Clock, ReplayStore } from '@tessera/plugin-sdk';
import { MemoryStateStore } from '../state/memory-store.js';
import type { StateStore } from '../state/store.js';
import { storeAnswer } from '../state/unavailable.js';

/**
 * How far apart replicas' clocks may be. The TTL of a replay record is computed from the clock of the
 * replica that wrote it, while another replica judges `exp` by its own: if the writer's clock runs ahead,
 * the record would vanish while a replica whose clock lags still accepts the assertion. Keeping the record
 * this much longer covers clocks up to 30 s apart (NTP keeps them far closer).
 */
export const REPLICA_CLOCK_SKEW_MS = 30_000;

/**
 * One-time identifiers on the state store: a key is claimed atomically (`SET NX PX` on Redis), so of any
 * number of concurrent uses across replicas exactly one succeeds. Kept until the verifier that accepted it
 * would stop accepting it (`expiresAt`), plus `REPLICA_CLOCK_SKEW_MS` on a store shared between replicas.
 * A store outage rejects with `TemporarilyUnavailable`.
 */
export class StoreReplayStore implements ReplayStore {
  readonly #marginMs: number;

  constructor(
    private readonly store: StateStore,
    private readonly clock: Clock,
    /** Extra retention for clock differences between replicas; none needed when one process holds the store. */
    marginMs = store.kind === 'memory' ? 0 : REPLICA_CLOCK_SKEW_MS,
  ) {
    this.#marginMs = marginMs;
  }

  async consume(key: string, expiresAt: Date): Promise<boolean> {
    const ttlMs = expiresAt.getTime() + this.#marginMs - this.clock.now().getTime();
    // Nothing to remember: no verifier, on any replica, accepts it any more.
    if (ttlMs <= 0) return true;
    return storeAnswer(this.store.claimOnce(`replay:${key}`, ttlMs), 'replay');
  }
}

/** Single-process replay cache (tests and embedding hosts): a `StoreReplayStore` on its own memory store. */
export class InMemoryReplayStore extends StoreReplayStore {
  readonly #store: MemoryStateStore;

  constructor(clock: Clock, sweepIntervalMs?: number) {
    const store = new MemoryStateStore(clock, sweepIntervalMs);
    super(store, clock);
    this.#store = store;
  }

  get size(): number {
    return this.#store.size;
  }
}
