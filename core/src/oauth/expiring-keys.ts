import type { Clock } from '@tessera/plugin-sdk';

/**
 * Keys remembered until a per-key expiry, swept lazily at most once per interval: memory is bounded by the
 * insertion rate times the longest expiry. Backs the single-process replay cache and revocation list.
 */
export class ExpiringKeys {
  readonly #until = new Map<string, number>();
  #nextSweepAt = 0;

  constructor(
    private readonly clock: Clock,
    private readonly sweepIntervalMs = 30_000,
  ) {}

  /** True while `key` is remembered and unexpired. */
  has(key: string): boolean {
    const now = this.#tick();
    const until = this.#until.get(key);
    return until !== undefined && until > now;
  }

  /** Remembers `key` until `expiresAt`; an existing, later expiry is kept. Past expiries are ignored. */
  remember(key: string, expiresAt: Date): void {
    const now = this.#tick();
    const until = expiresAt.getTime();
    if (until <= now) return;
    this.#until.set(key, Math.max(until, this.#until.get(key) ?? 0));
  }

  get size(): number {
    return this.#until.size;
  }

  #tick(): number {
    const now = this.clock.now().getTime();
    if (now >= this.#nextSweepAt) {
      this.#nextSweepAt = now + this.sweepIntervalMs;
      for (const [key, until] of this.#until) if (until <= now) this.#until.delete(key);
    }
    return now;
  }
}
