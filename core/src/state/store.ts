/**
 * State the broker shares across replicas: replay keys, revocations and kill-switch entries, rate-limit
 * counters. `memory` keeps it in this process; `redis` shares it through a Redis deployment.
 *
 * Every method rejects with `StoreUnavailable` when the backend cannot answer: callers fail closed (503 with
 * `Retry-After`), never open.
 */
export interface StateStore {
  /** Which backend this is, for logs and `/readyz`. */
  readonly kind: 'memory' | 'redis';
  /** Records `key` for `ttlMs` unless it is already there (atomic, like `SET NX PX`); true when this call recorded it. */
  claimOnce(key: string, ttlMs: number): Promise<boolean>;
  /** Sets `key` to `value` for `ttlMs`; an existing entry with a later expiry keeps that expiry. */
  put(key: string, value: string, ttlMs: number): Promise<void>;
  /** Values of `keys`, in order, `undefined` where absent or expired. One round trip. */
  getMany(keys: readonly string[]): Promise<(string | undefined)[]>;
  /** Every unexpired entry whose key starts with `prefix`, with when it expires. */
  list(prefix: string): Promise<{ key: string; value: string; expiresAt: Date }[]>;
  delete(key: string): Promise<void>;
  /** Counts one hit in the fixed window of `windowMs` that `key` names; resolves with the window's count, this hit included. */
  hit(key: string, windowMs: number): Promise<number>;
  /** Resolves when the backend answers and can be relied on; rejects with `StoreUnavailable` otherwise (`StoreUnsafe` when it answers but cannot). */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** The store could not answer; nothing that depends on it may be decided. */
export class StoreUnavailable extends Error {
  constructor(message = 'state store unavailable', options?: ErrorOptions) {
    super(message, options);
    this.name = 'StoreUnavailable';
  }
}

/**
 * The store answers but must not be relied on (a Redis that may evict keys): not ready. The message is a
 * fixed operator-facing reason for `/readyz`.
 */
export class StoreUnsafe extends StoreUnavailable {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'StoreUnsafe';
  }
}
