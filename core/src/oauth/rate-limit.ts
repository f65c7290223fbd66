import { TemporarilyUnavailable, type Clock, type Counter, type Logger, type Metrics } from '@tessera/plugin-sdk';
import type { RateLimit } from '../config/limits-schema.js';
import type { BrokerConfig } from '../config/schema.js';
import { StoreUnavailable, type StateStore } from '../state/store.js';
import type { ClientAuthenticator } from './client-auth.js';

/** Metric names the rate limiter owns; plugins may not register them. */
export const RATE_LIMIT_METRICS = ['tessera_rate_limited_requests_total'] as const;

export interface ClientRateLimiterDeps {
  readonly store: StateStore;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** The limit of one authenticated client (its own, else the default), or none. */
  readonly limitFor: (clientId: string) => RateLimit | undefined;
}

/**
 * Per-client fixed windows, counted in the state store so replicas sharing a Redis share each budget.
 * Windows are aligned to Unix time (the key names the window), so every replica agrees where a window ends
 * and `Retry-After` says exactly when the next one starts. A client may burst twice its limit across a
 * window boundary: the price of one round trip per request.
 */
export class ClientRateLimiter {
  readonly #refused: Counter;

  constructor(private readonly deps: ClientRateLimiterDeps) {
    this.#refused = deps.metrics.counter(RATE_LIMIT_METRICS[0], 'Token requests refused by the per-client rate limit (429), or because the store holding the counts did not answer (503)', ['reason']);
  }

  /**
   * Counts one request of an authenticated client: counting before authentication would let anyone spend
   * a victim's budget by sending its client_id. Throws 429 past the limit, 503 when the store cannot count
   * (fail closed: an unlimited broker is what the limit exists to prevent).
   */
  async check(clientId: string): Promise<void> {
    const limit = this.deps.limitFor(clientId);
    if (limit === undefined) return;
    const windowMs = limit.windowSeconds * 1000;
    const now = this.deps.clock.now().getTime();
    const window = Math.floor(now / windowMs);
    let count: number;
    try {
      count = await this.deps.store.hit(`ratelimit:${limit.windowSeconds}:${window}:${clientId}`, windowMs);
    } catch (error) {
      if (!(error instanceof StoreUnavailable)) this.deps.log.error({ err: error }, 'rate limit: unexpected state store error');
      this.#refused.inc({ reason: 'store_unavailable' });
      throw new TemporarilyUnavailable(undefined, { detail: 'rate limit: state store unavailable', cause: error });
    }
    if (count <= limit.requests) return;
    this.#refused.inc({ reason: 'over_limit' });
    throw new TemporarilyUnavailable('request rate limit exceeded, retry later', {
      // RFC 6585 §4: 429 for one client's excess, kept apart from the broker-wide 503.
      status: 429,
      retryAfterSeconds: Math.max(1, Math.ceil(((window + 1) * windowMs - now) / 1000)),
      detail: `rate limit: over ${limit.requests} per ${limit.windowSeconds}s`,
    });
  }
}

/** The limiter `config` asks for: a client's own `rateLimit`, else `limits.perClient`; none when neither is set anywhere. */
export function clientRateLimiterFor(
  config: Pick<BrokerConfig, 'clients' | 'limits'>,
  authenticator: ClientAuthenticator,
  deps: Omit<ClientRateLimiterDeps, 'limitFor'>,
): ClientRateLimiter | undefined {
  const fallback = config.limits.perClient;
  if (fallback === undefined && config.clients.every((client) => client.rateLimit === undefined)) return undefined;
  return new ClientRateLimiter({ ...deps, limitFor: (clientId) => authenticator.clientConfig(clientId)?.rateLimit ?? fallback });
}
