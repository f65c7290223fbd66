import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../src/logging.js';
import { GenerationSwitch, type Generation } from '../src/reload/generations.js';

/** A generation whose requests wait until the test releases them, and which records its close. */
class HeldGeneration implements Generation {
  closed = false;
  readonly held: (() => void)[] = [];
  readonly listener: RequestListener = (_req, res) => {
    this.held.push(() => res.end(String(this.id)));
  };

  constructor(readonly id: number) {}

  async close(): Promise<void> {
    this.closed = true;
  }

  release(): void {
    for (const answer of this.held.splice(0)) answer();
  }
}

let server: Server | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise<void>((done) => (server ? server.close(() => done()) : done()));
  server = undefined;
});

async function serve(listener: RequestListener): Promise<string> {
  server = createServer(listener);
  await new Promise<void>((done) => server!.listen(0, '127.0.0.1', done));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const until = async (check: () => boolean) => {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((done) => setTimeout(done, 5));
  expect(check()).toBe(true);
};

describe('GenerationSwitch', () => {
  it('keeps a request with the generation it started in, and closes that one only after its last request', async () => {
    const first = new HeldGeneration(1);
    const second = new HeldGeneration(2);
    const generations = new GenerationSwitch<HeldGeneration>(first, silentLogger);
    const url = await serve(generations.listener);

    const early = fetch(url).then((response) => response.text());
    await until(() => first.held.length === 1);
    expect(generations.swap(second)).toBe(first);
    expect(generations.current).toBe(second);
    const late = fetch(url).then((response) => response.text());
    await until(() => second.held.length === 1);
    expect(generations.inFlight()).toEqual(new Map([[1, 1], [2, 1]]));
    expect(first.closed).toBe(false);

    first.release();
    expect(await early).toBe('1');
    await until(() => first.closed);
    second.release();
    expect(await late).toBe('2');
    expect(second.closed).toBe(false);
  });

  it('keeps a generation open while the handler of a request the client aborted still runs', async () => {
    // As Koa's `app.callback()`: the listener returns the promise of the whole handling.
    class AsyncGeneration implements Generation {
      closed = false;
      aborted = false;
      usedAfterClose = false;
      release: () => void = () => undefined;
      readonly listener = ((_req, res) => {
        res.once('close', () => (this.aborted = !res.writableEnded));
        return new Promise<void>((settle) => {
          this.release = () => {
            // The handler touches its plugins after the client went away.
            if (this.closed) this.usedAfterClose = true;
            settle();
          };
        });
      }) as RequestListener;
      constructor(readonly id: number) {}
      async close(): Promise<void> {
        this.closed = true;
      }
    }
    const first = new AsyncGeneration(1);
    const generations = new GenerationSwitch<AsyncGeneration>(first, silentLogger);
    const url = await serve(generations.listener);

    const abort = new AbortController();
    const request = fetch(url, { signal: abort.signal }).catch(() => 'aborted');
    await new Promise((pause) => setTimeout(pause, 50));
    abort.abort();
    expect(await request).toBe('aborted');
    await until(() => first.aborted);
    generations.swap(new AsyncGeneration(2));
    await new Promise((pause) => setTimeout(pause, 200));
    expect(first.closed).toBe(false);
    expect(generations.inFlight().get(1)).toBe(1);

    first.release();
    await until(() => first.closed);
    expect(first.usedAfterClose).toBe(false);
    expect(generations.inFlight().has(1)).toBe(false);
  });

  it('closes an idle replaced generation at once, and every generation on closeAll', async () => {
    const first = new HeldGeneration(1);
    const second = new HeldGeneration(2);
    const generations = new GenerationSwitch<HeldGeneration>(first, silentLogger);
    generations.swap(second);
    await until(() => first.closed);
    await generations.closeAll();
    expect(second.closed).toBe(true);
  });
});
