interface Attempt<T> {
  readonly value: Promise<T>;
  failures: number;
  retryAt?: number;
}

/**
 * One shared attempt per key: every caller of `get` gets the same pending or settled promise. A failed
 * attempt is answered from cache until its backoff (1 s doubling to 60 s) ends, so requests naming a dark
 * upstream cannot make the broker fetch once per request; a success resets the backoff.
 */
export class BackoffMemo<T> {
  readonly #attempts = new Map<string, Attempt<T>>();

  get(key: string, load: () => Promise<T>): Promise<T> {
    let attempt = this.#attempts.get(key);
    if (!attempt || (attempt.retryAt !== undefined && Date.now() >= attempt.retryAt)) {
      const current: Attempt<T> = { value: load(), failures: attempt?.failures ?? 0 };
      current.value.then(
        () => {
          current.failures = 0;
        },
        () => {
          current.failures += 1;
          current.retryAt = Date.now() + Math.min(1_000 * 2 ** (current.failures - 1), 60_000);
        },
      );
      this.#attempts.set(key, current);
      attempt = current;
    }
    return attempt.value;
  }

  /** Drops a failed attempt so the next `get` retries at once (a failed warm-up must not impose a backoff). */
  forgetFailure(key: string): void {
    if (this.#attempts.get(key)?.retryAt !== undefined) this.#attempts.delete(key);
  }
}
