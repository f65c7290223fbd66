import type { Context, Middleware, Next } from 'koa';
import { TemporarilyUnavailable, type Logger } from '@tessera/plugin-sdk';
import type { BrokerConfig } from '../config/schema.js';
import type { PromMetrics } from '../metrics.js';
import { receiveBody } from './body-text.js';
import { chooseRequestId } from './request-id.js';

export type InFlightLimits = BrokerConfig['limits']['inFlight'];

/** Why a request was refused before it was processed. */
export type ShedReason = 'queue_full' | 'queue_timeout';

export type Admission = { readonly admitted: true; readonly waitedMs: number; release(): void } | { readonly admitted: false; readonly reason: ShedReason | 'gone' };

interface Waiter {
  readonly enqueuedAt: number;
  readonly timer: NodeJS.Timeout;
  settle(admission: Admission): void;
}

/** Shed warnings come at most this often; each one counts what happened since the previous one. */
const WARN_INTERVAL_MS = 10_000;

/**
 * At most `max` requests are processed at once; up to `queue` more wait, first come first served, for at most
 * `queueTimeoutMs`. Past that a request is refused at once. The work is CPU-bound (signature checks and
 * signing on one event loop), so beyond a small concurrency more requests in flight only add latency: an
 * unbounded server answers everyone late instead of most on time.
 *
 * No adaptive bound (shrinking `max` while the event loop lags): measured on a shared 2-core machine, the
 * lag came mostly from CPU the broker was not given, and shrinking on it cut goodput without lowering p99.
 */
export class InFlightLimiter {
  #active = 0;
  // A Set keeps insertion order and deletes in O(1) when a waiter times out or its client leaves.
  readonly #waiting = new Set<Waiter>();

  constructor(private readonly limits: Pick<InFlightLimits, 'max' | 'queue' | 'queueTimeoutMs'>) {}

  /** Requests being processed. */
  get active(): number {
    return this.#active;
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.#waiting.size;
  }

  /** Whether `admit` would refuse a request arriving now, without waiting. */
  get full(): boolean {
    return this.#active >= this.limits.max && (this.#waiting.size >= this.limits.queue || this.limits.queueTimeoutMs === 0);
  }

  /** Resolves when the request may proceed (call `release` when it is answered) or is shed; `abandoned` drops it from the queue. */
  admit(abandoned?: AbortSignal): Promise<Admission> {
    if (this.#active < this.limits.max) {
      this.#active += 1;
      return Promise.resolve({ admitted: true, waitedMs: 0, release: this.#releaser() });
    }
    if (this.full) return Promise.resolve({ admitted: false, reason: 'queue_full' });
    return new Promise<Admission>((resolve) => {
      const leave = () => settle({ admitted: false, reason: 'gone' });
      const settle = (admission: Admission) => {
        if (!this.#waiting.delete(waiter)) return;
        clearTimeout(waiter.timer);
        abandoned?.removeEventListener('abort', leave);
        resolve(admission);
      };
      const waiter: Waiter = {
        enqueuedAt: performance.now(),
        timer: setTimeout(() => settle({ admitted: false, reason: 'queue_timeout' }), this.limits.queueTimeoutMs),
        settle,
      };
      this.#waiting.add(waiter);
      abandoned?.addEventListener('abort', leave, { once: true });
    });
  }

  /** Passes free slots straight to the oldest waiters, so a newcomer can never overtake the queue. */
  #handOver(): void {
    while (this.#active < this.limits.max) {
      const next = this.#waiting.values().next().value;
      if (next === undefined) return;
      this.#active += 1;
      next.settle({ admitted: true, waitedMs: performance.now() - next.enqueuedAt, release: this.#releaser() });
    }
  }

  /** Idempotent, so a double release can never hand out a slot twice. */
  #releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#active -= 1;
      this.#handOver();
    };
  }
}

/** Metric names admission control owns; plugins may not register them. */
export const ADMISSION_METRICS = ['tessera_requests_shed_total', 'tessera_admission_wait_seconds', 'tessera_requests_in_flight', 'tessera_requests_queued'] as const;

/** Admission control of one broker: one limiter, shared by every door. */
export interface AdmissionControl {
  /**
   * The middleware of one door: a slot, a place in the queue, or a 503. It never reads the body itself;
   * the door puts `receiveBodyFirst` before it, so a slot is never held by an upload.
   */
  door(endpoint: string): Middleware;
  /**
   * The first middleware of the app. A request to a door (`endpointOf` its path) that finds every slot and
   * queue place taken once its body is in gets the door's own 503 here, before the request span, the
   * router and the error renderer run for it: under overload most requests are shed, and on a 2-core
   * machine a shed through the whole chain cost a third of a warm exchange, which left the admitted ones
   * little CPU. Whatever it lets through meets the door's admission as usual.
   */
  shedEarly(endpointOf: (path: string) => string | undefined, maxBodyBytes: number): Middleware;
}

/** Builds the admission control of one broker (`limits.inFlight`) and registers its metrics. */
export function admissionControl(limits: InFlightLimits, metrics: PromMetrics, log: Logger): AdmissionControl {
  const limiter = new InFlightLimiter(limits);
  const shed = metrics.counter(ADMISSION_METRICS[0], 'Requests refused with 503 before they were processed, because the broker was at its in-flight bound', ['endpoint', 'reason']);
  const waited = metrics.histogram(ADMISSION_METRICS[1], 'Time admitted requests waited for an in-flight slot', ['endpoint']);
  metrics.gauge(ADMISSION_METRICS[2], 'Requests being processed (at most limits.inFlight.max)', () => limiter.active);
  metrics.gauge(ADMISSION_METRICS[3], 'Requests waiting for an in-flight slot (at most limits.inFlight.queue)', () => limiter.queued);
  const warning = shedWarning(log, limits);
  // Built once: a shed must cost far less than an exchange, and capturing a stack per refusal does not.
  // Nothing reads its detail (sheds are not audited), so one instance serves every refusal.
  const overloaded = new TemporarilyUnavailable('server overloaded, retry later', { retryAfterSeconds: limits.retryAfterSeconds, detail: 'overload' });
  // The response the error renderer makes of it, with the headers every answer carries (app.ts).
  const earlyBody = JSON.stringify({ error: overloaded.code, error_description: overloaded.description });
  const earlyHeaders: Record<string, string> = {
    ...(overloaded.headers as Record<string, string>),
    'Cache-Control': 'no-store',
    Pragma: 'no-cache',
    'X-Content-Type-Options': 'nosniff',
    'Content-Type': 'application/json; charset=utf-8',
  };
  // Refused before the body is parsed or any signature checked.
  const refuse = (endpoint: string, reason: ShedReason): TemporarilyUnavailable => {
    shed.inc({ endpoint, reason });
    warning.note(reason);
    return overloaded;
  };
  return {
    door: (endpoint) =>
      async (ctx: Context, next: Next): Promise<void> => {
        const gone = new AbortController();
        const leave = () => gone.abort();
        ctx.res.once('close', leave);
        const admission = await limiter.admit(gone.signal);
        ctx.res.off('close', leave);
        if (!admission.admitted) {
          // Nobody is left to answer when the client went away while queued.
          if (admission.reason === 'gone') return;
          throw refuse(endpoint, admission.reason);
        }
        if (admission.waitedMs > 0) waited.observe({ endpoint }, admission.waitedMs / 1000);
        try {
          await next();
        } finally {
          admission.release();
        }
      },
    shedEarly: (endpointOf, maxBodyBytes) =>
      async (ctx: Context, next: Next): Promise<void> => {
        const endpoint = endpointOf(ctx.path);
        if (endpoint === undefined) return next();
        // The body is read here as the door would (receiveBodyFirst finds it read): a connection stays
        // usable for the client's next request only once its body has been consumed.
        await receiveBody(ctx, maxBodyBytes);
        if (!limiter.full) return next();
        refuse(endpoint, 'queue_full');
        ctx.status = overloaded.status;
        ctx.set(earlyHeaders);
        ctx.set('X-Request-Id', chooseRequestId(ctx.get('x-request-id') || undefined, undefined));
        ctx.body = earlyBody;
      },
  };
}

/** One warn line per interval at most, so an overload cannot also flood the log; counts are never dropped. */
function shedWarning(log: Logger, limits: InFlightLimits) {
  const counts: Record<ShedReason, number> = { queue_full: 0, queue_timeout: 0 };
  let lastAt = Number.NEGATIVE_INFINITY;
  let pending: NodeJS.Timeout | undefined;
  const flush = () => {
    clearTimeout(pending);
    pending = undefined;
    if (counts.queue_full + counts.queue_timeout === 0) return;
    lastAt = Date.now();
    log.warn({ max: limits.max, queue: limits.queue, queueTimeoutMs: limits.queueTimeoutMs, queueFull: counts.queue_full, queueTimeout: counts.queue_timeout }, 'overload: requests shed with 503 since the last warning');
    counts.queue_full = 0;
    counts.queue_timeout = 0;
  };
  return {
    note(reason: ShedReason) {
      counts[reason] += 1;
      const wait = lastAt + WARN_INTERVAL_MS - Date.now();
      if (wait <= 0) flush();
      else pending ??= setTimeout(flush, wait).unref();
    },
  };
}
