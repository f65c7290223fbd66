import { calculateJwkThumbprint, createLocalJWKSet, type JSONWebKeySet, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { Clock, KeyRing, Logger, SignedToken } from '@tessera/plugin-sdk';
import { ConfigError } from '../config/errors.js';
import { signCompactJwt } from './compact-sign.js';
import { signerOf, type SigningKey } from './key-ring.js';

/**
 * A retired key stays published this long past the expiry of the last token it signed: relying parties'
 * clocks drift, and many accept a token some leeway past its `exp`.
 */
export const RETIRED_KEY_SKEW_SECONDS = 300;

interface ScheduledKey {
  readonly key: SigningKey;
  /** RFC 7638 thumbprint of the public key: a kid must keep naming the same key while it is published. */
  readonly thumbprint: string;
  /** Since when relying parties may have seen it at /keys (ms). */
  readonly publishedSince: number;
  /** When it starts (or started) signing (ms); none for a key that does not sign under this schedule. */
  readonly signsFrom?: number;
}

/** The current schedule: which keys are published, which signs from when. */
interface Schedule {
  readonly entries: readonly ScheduledKey[];
  /** The `max-age` /keys is served with under this schedule. */
  readonly maxAgeSeconds: number;
  readonly fallbackLifetimeSeconds: number;
}

/** One config's keys, checked; `commit` turns them into the schedule (so a rejected reload changes nothing). */
export interface KeyPlan {
  readonly keys: readonly { readonly key: SigningKey; readonly thumbprint: string }[];
  readonly signerKid: string;
  readonly options: KeyScheduleOptions;
}

export interface KeyScheduleOptions {
  readonly publishAheadSeconds: number;
  /** Lifetime assumed for a signed payload without `exp` (the longest this broker can issue). */
  readonly maxTokenLifetimeSeconds: number;
}

export interface KeyStatus {
  readonly signing: string;
  /** The key that takes over, and when. */
  readonly next?: { readonly kid: string; readonly signsFrom: Date };
  readonly published: readonly string[];
}

/**
 * The broker's key ring across reloads: it lives as long as the process, and each config's keys become a
 * schedule. A new signing key is published at once and signs only after the publish-ahead time (relying
 * parties that cached /keys have refreshed by then). A config may not drop a key that still signs, or one
 * whose last token has not expired plus `RETIRED_KEY_SKEW_SECONDS`: the schedule lives in this process
 * only, and a restarted one must find the key in its config. Verification accepts every published key.
 */
export class RotatingKeyRing implements KeyRing {
  #schedule: Schedule = { entries: [], maxAgeSeconds: 0, fallbackLifetimeSeconds: 0 };
  /** Latest `exp` (ms) of the tokens each kid signed; kept apart from schedules so no signature is lost by a commit. */
  readonly #lastExpiry = new Map<string, number>();
  /** Each `max-age` earlier schedules served /keys with, and when it was last served (ms). */
  readonly #maxAgeServedUntil = new Map<number, number>();
  #verifier: { kids: string; resolve: JWTVerifyGetKey } | undefined;
  #lastSigner: string | undefined;

  constructor(
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /**
   * Checks one config's keys (in config order) for `commit`. Throws a `ConfigError` when none signs, when a
   * kid would name another key than the one relying parties may hold under it, or when the config drops a
   * key whose tokens may still be presented.
   */
  async plan(keys: readonly SigningKey[], options: KeyScheduleOptions): Promise<KeyPlan> {
    const signer = signerOf(keys);
    const current = new Map(this.#published().map((entry) => [entry.key.kid, entry]));
    const checked = await Promise.all(keys.map(async (key) => ({ key, thumbprint: await calculateJwkThumbprint(key.publicJwk) })));
    const problems = checked
      .filter(({ key, thumbprint }) => current.has(key.kid) && current.get(key.kid)!.thumbprint !== thumbprint)
      .map(({ key }) => `keys: kid "${key.kid}" names another key than the one published under it; give the new key its own kid`);
    if (problems.length > 0) throw new ConfigError(problems);
    const plan = { keys: checked, signerKid: signer.kid, options };
    const { removals } = this.#scheduleFor(plan, this.clock.now().getTime());
    if (removals.length > 0) throw new ConfigError(removals);
    return plan;
  }

  /**
   * Applies a plan from now on. Synchronous, so it swaps together with the config it came from, and times
   * count from the moment the new keys are actually published, not from when the plan was made. Throws a
   * `ConfigError` (and changes nothing) when, by now, the plan drops a key whose tokens may be presented.
   */
  commit(plan: KeyPlan): void {
    const now = this.clock.now().getTime();
    const { schedule, removals } = this.#scheduleFor(plan, now);
    // Checked again: the key may have signed, or a pending key taken over, since the plan was made.
    if (removals.length > 0) throw new ConfigError(removals);
    if (this.#schedule.entries.length > 0) this.#maxAgeServedUntil.set(this.#schedule.maxAgeSeconds, now);
    this.#schedule = schedule;
  }

  /** The schedule `plan` gives from `now`, and why it may not apply: keys it drops that must stay. */
  #scheduleFor(plan: KeyPlan, now: number): { schedule: Schedule; removals: string[] } {
    const current = new Map(this.#published().map((entry) => [entry.key.kid, entry]));
    const active = this.#signerAt(now);
    const entries: ScheduledKey[] = plan.keys.map(({ key, thumbprint }) => {
      const existing = current.get(key.kid);
      // Published under the same kid before: relying parties may have it since then.
      const publishedSince = existing && existing.thumbprint === thumbprint ? existing.publishedSince : now;
      return { key, thumbprint, publishedSince };
    });

    const desired = entries.find((entry) => entry.key.kid === plan.signerKid)!;
    let signsFrom: number;
    if (!active) signsFrom = now; // startup: no schedule yet, the configured signer signs at once
    else if (active.key.kid === desired.key.kid && active.thumbprint === desired.thumbprint) signsFrom = active.signsFrom ?? now;
    else signsFrom = Math.max(now, desired.publishedSince + plan.options.publishAheadSeconds * 1000, this.#cachedWithout(desired.publishedSince, now));

    // A key must stay in the config while its tokens may be presented: this process would keep it, but a
    // restarted one (or a worker `serve --workers` replaces) knows only the config, and would neither
    // publish it nor verify its tokens at /introspect and /revoke.
    const removals: string[] = [];
    for (const entry of current.values()) {
      if (plan.keys.some(({ key }) => key.kid === entry.key.kid)) continue;
      const expiry = this.#lastExpiry.get(entry.key.kid);
      if (expiry !== undefined && expiry + RETIRED_KEY_SKEW_SECONDS * 1000 > now) {
        const until = new Date(expiry + RETIRED_KEY_SKEW_SECONDS * 1000).toISOString();
        removals.push(`keys: key "${entry.key.kid}" signed tokens valid until ${until} (their expiry plus ${RETIRED_KEY_SKEW_SECONDS} s of clock skew): keep it in keys.files with use: publish until then`);
      } else if (entry === active && signsFrom > now) {
        const until = new Date(signsFrom).toISOString();
        removals.push(`keys: key "${entry.key.kid}" signs until "${desired.key.kid}" takes over at ${until}: keep it in keys.files with use: publish until the tokens it signs have expired`);
      }
    }

    return {
      schedule: {
        entries: entries.map((entry): ScheduledKey => {
          if (entry === desired) return { ...entry, signsFrom };
          // The current signer keeps signing until the new one takes over.
          if (active && entry.key.kid === active.key.kid && signsFrom > now) return { ...entry, signsFrom: active.signsFrom ?? now };
          return entry;
        }),
        maxAgeSeconds: plan.options.publishAheadSeconds,
        fallbackLifetimeSeconds: plan.options.maxTokenLifetimeSeconds,
      },
      removals,
    };
  }

  /**
   * Until when a relying party may hold a /keys fetched before `publishedSince` (so without the key
   * published then): a copy served with max-age M at time t is cached until t + M, whichever config
   * served it. Not just the last config's max-age: a lowered publishAheadSeconds does not shorten what
   * relying parties already cached.
   */
  #cachedWithout(publishedSince: number, now: number): number {
    let until = Math.min(now, publishedSince) + this.#schedule.maxAgeSeconds * 1000;
    for (const [maxAgeSeconds, servedUntil] of this.#maxAgeServedUntil) {
      if (servedUntil + maxAgeSeconds * 1000 <= now) this.#maxAgeServedUntil.delete(maxAgeSeconds);
      else until = Math.max(until, Math.min(servedUntil, publishedSince) + maxAgeSeconds * 1000);
    }
    return until;
  }

  /** What signs now, what signs next, what is published. */
  status(): KeyStatus {
    const now = this.clock.now().getTime();
    const signing = this.#signerAt(now);
    const next = this.#schedule.entries.find((entry) => entry.signsFrom !== undefined && entry.signsFrom > now);
    return {
      signing: signing?.key.kid ?? '',
      ...(next ? { next: { kid: next.key.kid, signsFrom: new Date(next.signsFrom!) } } : {}),
      published: this.#published().map((entry) => entry.key.kid),
    };
  }

  /** Seconds relying parties may cache /keys: never longer than a new key is published ahead of signing. */
  get maxAgeSeconds(): number {
    return this.#schedule.maxAgeSeconds;
  }

  get algorithms(): readonly string[] {
    return [...new Set(this.#published().map((entry) => entry.key.alg))];
  }

  async sign(claims: JWTPayload, options: { readonly typ: string }): Promise<SignedToken> {
    const now = this.clock.now().getTime();
    const signer = this.#signerAt(now);
    if (!signer) throw new Error('key ring: no key signs (no schedule committed)');
    const { kid, alg, privateKey } = signer.key;
    // Recorded before signing: the key must stay published for as long as this token may be presented.
    const expiry = typeof claims.exp === 'number' ? claims.exp * 1000 : now + this.#schedule.fallbackLifetimeSeconds * 1000;
    this.#lastExpiry.set(kid, Math.max(this.#lastExpiry.get(kid) ?? 0, expiry));
    if (this.#lastSigner !== kid) {
      if (this.#lastSigner !== undefined) this.log.info({ kid, previousKid: this.#lastSigner }, 'keys: a new signing key is in use');
      this.#lastSigner = kid;
    }
    const token = signCompactJwt(claims, { alg, kid, typ: options.typ }, privateKey);
    return { token, kid, alg };
  }

  publicJwks(): JSONWebKeySet {
    return { keys: this.#published().map((entry) => structuredClone(entry.key.publicJwk)) };
  }

  /** Resolves against the keys published at verification time, so a caller may keep it across rotations. */
  verifier(): JWTVerifyGetKey {
    return (header, token) => this.#currentVerifier()(header, token);
  }

  #currentVerifier(): JWTVerifyGetKey {
    const published = this.#published();
    const kids = published.map((entry) => `${entry.key.kid}:${entry.thumbprint}`).join(' ');
    if (this.#verifier?.kids !== kids) this.#verifier = { kids, resolve: createLocalJWKSet({ keys: published.map((entry) => entry.key.publicJwk) }) };
    return this.#verifier.resolve;
  }

  #signerAt(now: number): ScheduledKey | undefined {
    let signer: ScheduledKey | undefined;
    for (const entry of this.#schedule.entries) {
      if (entry.signsFrom !== undefined && entry.signsFrom <= now && (signer === undefined || entry.signsFrom > signer.signsFrom!)) signer = entry;
    }
    return signer;
  }

  #published(): ScheduledKey[] {
    return [...this.#schedule.entries];
  }
}
