import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Logger } from '@tessera/plugin-sdk';

/** What one config builds: its request handler, and what to release once no request uses it. */
export interface Generation {
  /** 1 for the config the broker started with, +1 per applied reload. */
  readonly id: number;
  readonly listener: RequestListener;
  close(): Promise<void>;
}

/**
 * The generation requests go to, swapped atomically on reload. Each request stays with the generation it
 * started in; a replaced generation is closed (its plugins stopped) once its last request has finished,
 * so a reload never cuts a request or pulls a plugin from under one.
 */
export class GenerationSwitch<G extends Generation> {
  #current: G;
  readonly #inFlight = new Map<G, number>();
  readonly #retired = new Set<G>();
  readonly #closing = new Set<Promise<void>>();

  constructor(
    first: G,
    private readonly log: Logger,
  ) {
    this.#current = first;
  }

  get current(): G {
    return this.#current;
  }

  /** Requests in flight per generation still open (the current one and those draining). */
  inFlight(): ReadonlyMap<number, number> {
    return new Map([...this.#inFlight].map(([generation, count]) => [generation.id, count]));
  }

  readonly listener: RequestListener = (req: IncomingMessage, res: ServerResponse) => {
    const generation = this.#current;
    this.#inFlight.set(generation, (this.#inFlight.get(generation) ?? 0) + 1);
    // Done only once the handler has settled AND the response has closed: 'close' alone also fires when
    // the client aborts, while the handler may still be using this generation's plugins; the handler
    // settling alone may precede the end of a streamed body.
    let pending = 2;
    const finish = () => {
      if (--pending > 0) return;
      const left = (this.#inFlight.get(generation) ?? 1) - 1;
      if (left > 0) this.#inFlight.set(generation, left);
      else {
        this.#inFlight.delete(generation);
        if (this.#retired.has(generation)) this.#close(generation);
      }
    };
    res.once('close', finish);
    let handled: unknown;
    try {
      // Koa's `app.callback()` returns the promise of the whole middleware chain.
      handled = (generation.listener as (req: IncomingMessage, res: ServerResponse) => unknown)(req, res);
    } catch (error) {
      finish();
      throw error;
    }
    Promise.resolve(handled).then(finish, (error: unknown) => {
      this.log.warn({ generation: generation.id, err: error instanceof Error ? error.message : String(error) }, 'reload: a request handler failed');
      finish();
    });
  };

  /** Makes `next` current; the previous one closes when its requests are done. Returns the previous one. */
  swap(next: G): G {
    const previous = this.#current;
    this.#current = next;
    this.#retired.add(previous);
    if (!this.#inFlight.has(previous)) this.#close(previous);
    return previous;
  }

  /** Closes every generation, the current one last; waits for closes already under way. */
  async closeAll(): Promise<void> {
    for (const generation of this.#retired) this.#close(generation);
    await Promise.all(this.#closing);
    await this.#current.close();
  }

  #close(generation: G): void {
    if (!this.#retired.delete(generation)) return;
    const closing = generation
      .close()
      .then(
        () => this.log.info({ generation: generation.id }, 'reload: previous config closed (its requests finished, its plugins stopped)'),
        (error: unknown) => this.log.warn({ generation: generation.id, err: error instanceof Error ? error.message : String(error) }, 'reload: closing the previous config failed'),
      )
      .finally(() => this.#closing.delete(closing));
    this.#closing.add(closing);
  }
}
