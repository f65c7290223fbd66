import type { Clock } from '@tessera/plugin-sdk';
import type { StateStore } from './store.js';

interface Entry {
  value: string;
  /** Epoch ms after which the entry is gone. */
  until: number;
}

/**
 * The embedded store: one process, nothing shared. Entries are swept lazily at most once per interval, so
 * memory is bounded by the insertion rate times the longest expiry. Never for more than one broker process:
 * a replay accepted here is unknown to the next process (`checkStoreForFleet`).
 */
export class MemoryStateStore implements StateStore {
  readonly kind = 'memory' as const;
  readonly #entries = new Map<string, Entry>();
  #nextSweepAt = 0;

  constructor(
    private readonly clock: Clock,
    private readonly sweepIntervalMs = 30_000,
  ) {}

  async claimOnce(key: string, ttlMs: number): Promise<boolean> {
    const now = this.#tick();
    if (this.#live(key, now)) return false;
    if (ttlMs > 0) this.#entries.set(key, { value: '1', until: now + ttlMs });
    return true;
  }

  async put(key: string, value: string, ttlMs: number): Promise<void> {
    const now = this.#tick();
    if (ttlMs <= 0) return;
    const existing = this.#live(key, now);
    this.#entries.set(key, { value, until: Math.max(now + ttlMs, existing?.until ?? 0) });
  }

  async getMany(keys: readonly string[]): Promise<(string | undefined)[]> {
    const now = this.#tick();
    return keys.map((key) => this.#live(key, now)?.value);
  }

  async list(prefix: string): Promise<{ key: string; value: string; expiresAt: Date }[]> {
    const now = this.#tick();
    const found: { key: string; value: string; expiresAt: Date }[] = [];
    for (const [key, entry] of this.#entries) if (key.startsWith(prefix) && entry.until > now) found.push({ key, value: entry.value, expiresAt: new Date(entry.until) });
    return found;
  }

  async delete(key: string): Promise<void> {
    this.#tick();
    this.#entries.delete(key);
  }

  async hit(key: string, windowMs: number): Promise<number> {
    const now = this.#tick();
    const entry = this.#live(key, now);
    const count = entry ? Number(entry.value) + 1 : 1;
    // Like PEXPIRE NX: the window starts with its first hit and is never extended.
    this.#entries.set(key, { value: String(count), until: entry?.until ?? now + windowMs });
    return count;
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    this.#entries.clear();
  }

  /** Entries held, expired ones not yet swept included. */
  get size(): number {
    return this.#entries.size;
  }

  #live(key: string, now: number): Entry | undefined {
    const entry = this.#entries.get(key);
    return entry && entry.until > now ? entry : undefined;
  }

  #tick(): number {
    const now = this.clock.now().getTime();
    if (now >= this.#nextSweepAt) {
      this.#nextSweepAt = now + this.sweepIntervalMs;
      for (const [key, entry] of this.#entries) if (entry.until <= now) this.#entries.delete(key);
    }
    return now;
  }
}
