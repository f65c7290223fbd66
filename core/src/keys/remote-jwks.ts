import { createLocalJWKSet, errors as joseErrors, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { TemporarilyUnavailable, type Clock, type HttpFetcher, type JwksCache, type Logger } from '@tessera/plugin-sdk';

export interface RemoteJwksOptions {
  /** Keys younger than this are served without a refresh; older ones are served while one runs. */
  readonly maxAgeMs: number;
  /** Minimum time between successful fetches of one JWKS (bounds unknown-kid refreshes). */
  readonly cooldownMs: number;
  /** First wait after a failed fetch; doubles with each consecutive failure. */
  readonly minBackoffMs: number;
  /** Upper bound of that backoff. */
  readonly maxBackoffMs: number;
}

export const DEFAULT_JWKS_OPTIONS: RemoteJwksOptions = { maxAgeMs: 300_000, cooldownMs: 30_000, minBackoffMs: 1_000, maxBackoffMs: 60_000 };

interface Entry {
  readonly uri: string;
  keys?: JWTVerifyGetKey;
  fetchedAt: number;
  /** No fetch starts before this instant (cool-down after success, backoff after failure). */
  nextFetchAt: number;
  failures: number;
  inflight?: Promise<boolean>;
  /** A plugin warmed it at startup: a trusted issuer's keys, which readiness waits for. */
  warmed?: boolean;
}

/**
 * JWKS cache in front of jose's local key sets. jose's own remote set drops its keys on a failed refresh;
 * a broker must keep verifying through an issuer outage, so this keeps the last good set, revalidates in
 * the background when stale, and bounds unknown-kid refreshes to one per cool-down (with exponential
 * backoff after failures) so a flood of forged kids cannot turn the broker into a traffic amplifier.
 */
export class RemoteJwksCache implements JwksCache {
  readonly #entries = new Map<string, Entry>();

  constructor(
    private readonly fetcher: HttpFetcher,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly options: RemoteJwksOptions = DEFAULT_JWKS_OPTIONS,
  ) {}

  remote(jwksUri: string): JWTVerifyGetKey {
    const entry = this.#entry(jwksUri);
    return (header, token) => this.#resolve(entry, header, token);
  }

  async warm(jwksUri: string): Promise<boolean> {
    const entry = this.#entry(jwksUri);
    entry.warmed = true;
    const ok = await this.#refresh(entry);
    // A best-effort prefetch at startup: its failure must not hold back the first real request.
    if (!ok && !entry.keys) entry.nextFetchAt = 0;
    return ok;
  }

  /**
   * Origins of the key sets warmed at startup that have never been fetched, after one more try for each
   * (a probe retries them, so a broker out of rotation still gets ready once the issuer answers). Once a
   * set was fetched it stays usable through outages, so this only ever reports a cold start.
   */
  async coldSources(): Promise<string[]> {
    const cold = [...this.#entries.values()].filter((entry) => entry.warmed && !entry.keys);
    // Within the failure backoff, like any request: probes from several sources must not hammer the issuer.
    const now = this.#now();
    await Promise.all(cold.filter((entry) => entry.inflight || now >= entry.nextFetchAt).map((entry) => this.#refresh(entry)));
    return cold.filter((entry) => !entry.keys).map((entry) => new URL(entry.uri).origin);
  }

  async #resolve(entry: Entry, ...args: Parameters<JWTVerifyGetKey>): Promise<Awaited<ReturnType<JWTVerifyGetKey>>> {
    const now = this.#now();
    if (!entry.keys) {
      if (entry.inflight || now >= entry.nextFetchAt) await this.#refresh(entry);
      if (!entry.keys) {
        throw new TemporarilyUnavailable('token issuer keys are unavailable, retry later', {
          detail: `jwks unavailable: ${new URL(entry.uri).origin}`,
          retryAfterSeconds: Math.max(1, Math.ceil((entry.nextFetchAt - this.#now()) / 1000)),
        });
      }
    } else if (now - entry.fetchedAt >= this.options.maxAgeMs && now >= entry.nextFetchAt) {
      void this.#refresh(entry); // stale-while-revalidate: this request uses the keys at hand
    }
    const keys = entry.keys;
    try {
      return await keys(...args);
    } catch (error) {
      if (!(error instanceof joseErrors.JWKSNoMatchingKey)) throw error;
      // Unknown kid: the issuer may have rotated. Refresh only if the cool-down allows (or one is running).
      if (!entry.inflight && this.#now() < entry.nextFetchAt) throw error;
      await this.#refresh(entry);
      if (entry.keys === keys) throw error;
      return entry.keys!(...args);
    }
  }

  #refresh(entry: Entry): Promise<boolean> {
    entry.inflight ??= this.#fetch(entry).finally(() => {
      entry.inflight = undefined;
    });
    return entry.inflight;
  }

  async #fetch(entry: Entry): Promise<boolean> {
    try {
      const document = await this.fetcher.getJson(entry.uri);
      const keys = createLocalJWKSet(document as JSONWebKeySet);
      const now = this.#now();
      entry.keys = keys;
      entry.fetchedAt = now;
      entry.failures = 0;
      entry.nextFetchAt = now + this.options.cooldownMs;
      return true;
    } catch (error) {
      entry.failures += 1;
      const backoff = Math.min(this.options.minBackoffMs * 2 ** (entry.failures - 1), this.options.maxBackoffMs);
      entry.nextFetchAt = this.#now() + backoff;
      this.log.warn(
        { jwks: new URL(entry.uri).origin, failures: entry.failures, retryInMs: backoff, keptKeys: entry.keys !== undefined, err: String(error) },
        'JWKS refresh failed',
      );
      return false;
    }
  }

  #entry(uri: string): Entry {
    let entry = this.#entries.get(uri);
    if (!entry) {
      entry = { uri, fetchedAt: 0, nextFetchAt: 0, failures: 0 };
      this.#entries.set(uri, entry);
    }
    return entry;
  }

  #now(): number {
    return this.clock.now().getTime();
  }
}
