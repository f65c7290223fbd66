/**
 * The time budget of one plugin call: after `ms`, `signal` aborts and `expired` rejects with what
 * `refusal` builds. Unlike `AbortSignal.timeout`, it is ended with the call: an unended timer fires for
 * every request `ms` later anyway, building an abort reason and a refusal nobody waits for. Under load that
 * was thousands of live timers and a few per cent of an exchange's CPU (docs/performance.md).
 */
export class CallBudget {
  readonly #controller = new AbortController();
  readonly #timer: NodeJS.Timeout;
  /** Rejects when the budget runs out; never settles otherwise. Race the call against it. */
  readonly expired: Promise<never>;

  constructor(ms: number, refusal: () => Error) {
    let expire!: (error: Error) => void;
    this.expired = new Promise<never>((_, reject) => (expire = reject));
    // Nobody may be racing it any more when it fires.
    this.expired.catch(() => undefined);
    this.#timer = setTimeout(() => {
      // The reason AbortSignal.timeout gives, so plugins passing the signal on see what they would expect.
      this.#controller.abort(new DOMException('the call budget ran out', 'TimeoutError'));
      expire(refusal());
    }, ms);
    // A pending budget never keeps the process alive on its own.
    this.#timer.unref();
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** The call is over: the budget never fires. */
  end(): void {
    clearTimeout(this.#timer);
  }
}
