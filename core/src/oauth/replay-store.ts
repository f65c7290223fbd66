import type { Clock, ReplayStore } from '@tessera/plugin-sdk';
import { ExpiringKeys } from './expiring-keys.js';

/**
 * Single-process replay cache. Entries live until the assertion's `exp`, so memory is bounded by the
 * assertion rate times the capped assertion lifetime. Replicas need a shared store.
 */
export class InMemoryReplayStore implements ReplayStore {
  readonly #seen: ExpiringKeys;

  constructor(clock: Clock, sweepIntervalMs?: number) {
    this.#seen = new ExpiringKeys(clock, sweepIntervalMs);
  }

  async consume(key: string, expiresAt: Date): Promise<boolean> {
    if (this.#seen.has(key)) return false;
    this.#seen.remember(key, expiresAt);
    return true;
  }

  get size(): number {
    return this.#seen.size;
  }
}
