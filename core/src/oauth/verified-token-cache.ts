import { createHash } from 'node:crypto';
import type { Counter, ValidationContext, VerifiedIdentity } from '@tessera/plugin-sdk';

export const VERIFIED_TOKEN_METRICS = ['tessera_verified_tokens_total'] as const;

export interface VerifiedTokenCacheOptions {
  /** Entries kept at most; the least recently used goes first. 0 turns the cache off. */
  readonly maxEntries: number;
  /** Longest an entry is reused, whatever the token's own expiry. */
  readonly maxAgeSeconds: number;
}

interface Entry {
  readonly identity: VerifiedIdentity;
  /** Epoch ms after which the entry is not reused. */
  readonly until: number;
}

/**
 * Identities verified for subject and actor tokens, for validators that allow reuse
 * (`SubjectValidator.caching`). The key is a SHA-256 of the token plus every part of the validation
 * context a result depends on, so a token verified for one client, role or audience rule is never
 * reused for another. Only successes are kept; one cache per config generation (a reload starts empty).
 */
export class VerifiedTokenCache {
  readonly #entries = new Map<string, Entry>();

  constructor(
    private readonly options: VerifiedTokenCacheOptions,
    private readonly counter?: Counter,
  ) {}

  get enabled(): boolean {
    return this.options.maxEntries > 0;
  }

  get size(): number {
    return this.#entries.size;
  }

  static key(token: string, ctx: ValidationContext): string {
    const digest = createHash('sha256').update(token).digest('base64url');
    // Client ids are config values; the separator cannot occur in a token type URN or a role.
    return `${digest} ${ctx.tokenType} ${ctx.role} ${ctx.brokerAudienceOnly === true ? 1 : 0} ${ctx.client?.id ?? ''}`;
  }

  get(key: string, now: Date): VerifiedIdentity | undefined {
    const entry = this.#entries.get(key);
    if (!entry || entry.until <= now.getTime()) {
      if (entry) this.#entries.delete(key);
      return undefined;
    }
    // Most recently used last: Map keeps insertion order, so eviction takes the first key.
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    return entry.identity;
  }

  set(key: string, identity: VerifiedIdentity, now: Date): void {
    if (!this.enabled) return;
    const until = Math.min(identity.expiresAt.getTime(), now.getTime() + this.options.maxAgeSeconds * 1000);
    if (until <= now.getTime()) return;
    this.#entries.delete(key);
    this.#entries.set(key, { identity, until });
    while (this.#entries.size > this.options.maxEntries) this.#entries.delete(this.#entries.keys().next().value!);
  }

  /** Counts a subject or actor validation: done by its plugin, or a verification reused. */
  count(outcome: 'verified' | 'reused'): void {
    this.counter?.inc({ outcome });
  }

  delete(key: string): void {
    this.#entries.delete(key);
  }
}
