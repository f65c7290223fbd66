import type { Clock, ReplayStore } from '@tessera/plugin-sdk';

/**
 * Single-process replay cache. Entries live until the assertion's `exp`, so memory is bounded by the
 * assertion rate times the capped assertion lifetime. Replicas need a shared store.
 */
export class InMemoryReplayStore implements ReplayStore {
  readonly #seen = new Map<string, number>();
  #nextSweepAt = 0;

  constructor(
    private readonly clock: Clock,
    private readonly sweepIntervalMs = 30_000,
  ) {}

  async consume(key: string, expiresAt: Date): Promise<boolean> {
    const now = this.clock.now().getTime();
    this.#sweep(now);
    const known = this.#seen.get(key);
    if (known !== undefined && known > now) return false;
    this.#seen.set(key, expiresAt.getTime());
    return true;
  }

  get size(): number {
    return this.#seen.size;
  }

  #sweep(now: number): void {
    if (now < this.#nextSweepAt) return;
    this.#nextSweepAt = now + this.sweepIntervalMs;
    for (const [key, expiresAt] of this.#seen) if (expiresAt <= now) this.#seen.delete(key);
  }
}
