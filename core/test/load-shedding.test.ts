import { once } from 'node:events';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import { afterEach, describe, expect, it } from 'vitest';
import { readBodyText, receiveBodyFirst } from '../src/http/body-text.js';
import { InFlightLimiter, admissionControl, type Admission } from '../src/http/load-shedding.js';
import { renderErrors } from '../src/http/render-errors.js';
import { silentLogger } from '../src/logging.js';
import { PromMetrics } from '../src/metrics.js';

const admitted = (admission: Admission) => {
  if (!admission.admitted) throw new Error(`shed: ${admission.reason}`);
  return admission;
};

describe('InFlightLimiter', () => {
  it('admits max at once, queues the next ones, and refuses beyond the queue at once', async () => {
    const limiter = new InFlightLimiter({ max: 2, queue: 1, queueTimeoutMs: 10_000 });
    const first = admitted(await limiter.admit());
    admitted(await limiter.admit());
    const waiting = limiter.admit();
    expect(limiter).toMatchObject({ active: 2, queued: 1 });
    await expect(limiter.admit()).resolves.toEqual({ admitted: false, reason: 'queue_full' });
    first.release();
    const third = admitted(await waiting);
    expect(third.waitedMs).toBeGreaterThan(0);
    expect(limiter).toMatchObject({ active: 2, queued: 0 });
  });

  it('hands freed slots to waiters first come, first served, never to a newcomer', async () => {
    const limiter = new InFlightLimiter({ max: 1, queue: 3, queueTimeoutMs: 10_000 });
    const holder = admitted(await limiter.admit());
    const order: number[] = [];
    const waiters = [1, 2, 3].map((n) => limiter.admit().then((admission) => (order.push(n), admitted(admission))));
    holder.release();
    // The slot went to waiter 1; a newcomer has to queue behind 2 and 3.
    const newcomer = limiter.admit().then((admission) => (order.push(4), admitted(admission)));
    for (const waiter of [...waiters, newcomer]) (await waiter).release();
    expect(order).toEqual([1, 2, 3, 4]);
    expect(limiter).toMatchObject({ active: 0, queued: 0 });
  });

  it('sheds a waiter after queueTimeoutMs, and queueTimeoutMs 0 means no waiting', async () => {
    const limiter = new InFlightLimiter({ max: 1, queue: 4, queueTimeoutMs: 40 });
    admitted(await limiter.admit());
    const started = performance.now();
    await expect(limiter.admit()).resolves.toEqual({ admitted: false, reason: 'queue_timeout' });
    expect(performance.now() - started).toBeGreaterThanOrEqual(35);
    expect(limiter.queued).toBe(0);

    const noWait = new InFlightLimiter({ max: 1, queue: 4, queueTimeoutMs: 0 });
    admitted(await noWait.admit());
    await expect(noWait.admit()).resolves.toEqual({ admitted: false, reason: 'queue_full' });
  });

  it('drops a waiter whose client left, without spending a slot on it', async () => {
    const limiter = new InFlightLimiter({ max: 1, queue: 2, queueTimeoutMs: 10_000 });
    const holder = admitted(await limiter.admit());
    const gone = new AbortController();
    const leaving = limiter.admit(gone.signal);
    const staying = limiter.admit();
    gone.abort();
    await expect(leaving).resolves.toEqual({ admitted: false, reason: 'gone' });
    expect(limiter.queued).toBe(1);
    holder.release();
    admitted(await staying).release();
    expect(limiter).toMatchObject({ active: 0, queued: 0 });
  });

  it('a second release of one admission frees nothing more', async () => {
    const limiter = new InFlightLimiter({ max: 1, queue: 0, queueTimeoutMs: 100 });
    const one = admitted(await limiter.admit());
    one.release();
    const two = admitted(await limiter.admit());
    one.release();
    await expect(limiter.admit()).resolves.toEqual({ admitted: false, reason: 'queue_full' });
    two.release();
    expect(limiter.active).toBe(0);
  });
});

describe('admissionControl middleware', () => {
  let server: Server | undefined;
  afterEach(async () => {
    server?.closeAllConnections();
    await new Promise((done) => server?.close(done) ?? done(undefined));
    server = undefined;
  });

  /** A door that parks each request until `open()`; the body is read only once admitted. */
  async function door(limits: { max: number; queue: number; queueTimeoutMs: number }) {
    const metrics = new PromMetrics();
    const admit = admissionControl({ ...limits, retryAfterSeconds: 2 }, metrics, silentLogger);
    const parked: (() => void)[] = [];
    const app = new Koa();
    app.use(renderErrors(silentLogger));
    app.use(admit.door('token'));
    app.use(async (ctx) => {
      await new Promise<void>((resume) => parked.push(resume));
      let body = '';
      for await (const chunk of ctx.req) body += String(chunk);
      ctx.body = { body };
    });
    server = createServer(app.callback());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as AddressInfo).port;
    return { metrics, parked, port };
  }

  /** Sends the headers and `sent` of a body announced as `length` bytes; resolves with the answer. */
  function post(port: number, sent: string, length = Buffer.byteLength(sent)) {
    return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((done, fail) => {
      const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/token', headers: { 'content-length': length, connection: 'close' } }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
        res.once('end', () => done({ status: res.statusCode!, headers: res.headers, body }));
      });
      req.once('error', fail);
      req.write(sent);
      if (Buffer.byteLength(sent) === length) req.end();
    });
  }

  it('answers 503 temporarily_unavailable with Retry-After at once, before the body has even arrived, and counts it', async () => {
    const { metrics, parked, port } = await door({ max: 1, queue: 0, queueTimeoutMs: 0 });
    const busy = post(port, 'a=1');
    await expect.poll(() => parked.length).toBe(1);

    const started = performance.now();
    // Only half the announced body is ever sent: the middleware itself never waits for a body.
    const shed = await post(port, 'x=', 4096);
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(shed.status).toBe(503);
    expect(shed.headers).toMatchObject({ 'retry-after': '2', 'cache-control': 'no-store' });
    expect(JSON.parse(shed.body)).toEqual({ error: 'temporarily_unavailable', error_description: 'server overloaded, retry later' });

    parked.shift()!();
    await expect(busy).resolves.toMatchObject({ status: 200, body: '{"body":"a=1"}' });
    const { body } = await metrics.exposition();
    expect(body).toContain('tessera_requests_shed_total{endpoint="token",reason="queue_full"} 1');
    expect(body).toContain('tessera_requests_in_flight 0');
  });

  it('lets a queued request through when a slot frees within queueTimeoutMs, and sheds it when none does', async () => {
    const { metrics, parked, port } = await door({ max: 1, queue: 1, queueTimeoutMs: 300 });
    const first = post(port, 'n=1');
    await expect.poll(() => parked.length).toBe(1);
    const queued = post(port, 'n=2');
    await expect.poll(async () => (await metrics.exposition()).body).toContain('tessera_requests_queued 1');
    parked.shift()!();
    await expect.poll(() => parked.length).toBe(1);
    parked.shift()!();
    await expect(first).resolves.toMatchObject({ status: 200 });
    await expect(queued).resolves.toMatchObject({ status: 200, body: '{"body":"n=2"}' });

    const holder = post(port, 'n=3');
    await expect.poll(() => parked.length).toBe(1);
    const started = performance.now();
    await expect(post(port, 'n=4')).resolves.toMatchObject({ status: 503 });
    expect(performance.now() - started).toBeGreaterThanOrEqual(250);
    parked.shift()!();
    await holder;
    expect((await metrics.exposition()).body).toContain('tessera_requests_shed_total{endpoint="token",reason="queue_timeout"} 1');
  });
});

describe('admissionControl early shed', () => {
  let server: Server | undefined;
  afterEach(async () => {
    server?.closeAllConnections();
    await new Promise((done) => server?.close(done) ?? done(undefined));
    server = undefined;
  });

  /**
   * The app's order (app.ts): the early shed first, then the headers every answer gets, the error
   * renderer and the doors. `/token` is known to the early shed; `/plain` is a door it does not know,
   * so it sheds through the whole chain, for comparison.
   */
  async function app() {
    const metrics = new PromMetrics();
    const admission = admissionControl({ max: 1, queue: 0, queueTimeoutMs: 0, retryAfterSeconds: 3 }, metrics, silentLogger);
    const parked: (() => void)[] = [];
    const koa = new Koa();
    koa.use(admission.shedEarly((path) => (path === '/token' ? 'token' : undefined), 1_024));
    koa.use(async (ctx, next) => {
      ctx.set('X-Request-Id', 'from-the-chain');
      ctx.set('X-Content-Type-Options', 'nosniff');
      await next();
    });
    koa.use(renderErrors(silentLogger));
    koa.use(receiveBodyFirst(1_024));
    const token = admission.door('token');
    const plain = admission.door('plain');
    koa.use((ctx, next) => (ctx.path === '/token' ? token(ctx, next) : plain(ctx, next)));
    koa.use(async (ctx) => {
      await new Promise<void>((resume) => parked.push(resume));
      ctx.body = { body: await readBodyText(ctx, 1_024) };
    });
    server = createServer(koa.callback());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return { metrics, parked, port: (server.address() as AddressInfo).port };
  }

  function post(port: number, path: string, body: string, headers: Record<string, string> = {}) {
    return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((done, fail) => {
      const req = request({ host: '127.0.0.1', port, method: 'POST', path, headers: { 'content-length': Buffer.byteLength(body), connection: 'close', ...headers } }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
        res.once('end', () => done({ status: res.statusCode!, headers: res.headers, body: text }));
      });
      req.once('error', fail);
      req.end(body);
    });
  }

  it('answers exactly what the door would, counted under the door, and lets requests through while a slot is free', async () => {
    const { metrics, parked, port } = await app();
    const busy = post(port, '/token', 'a=1');
    await expect.poll(() => parked.length).toBe(1);

    const early = await post(port, '/token', 'b=2');
    const late = await post(port, '/plain', 'c=3');
    const comparable = (headers: Record<string, unknown>) => {
      const { date: _date, 'x-request-id': requestId, ...rest } = headers;
      expect(requestId).toEqual(expect.any(String));
      return rest;
    };
    expect(early.status).toBe(503);
    expect(early.body).toBe(late.body);
    expect(comparable(early.headers)).toEqual(comparable(late.headers));
    expect(early.headers).toMatchObject({ 'retry-after': '3', 'cache-control': 'no-store', pragma: 'no-cache', 'x-content-type-options': 'nosniff' });
    // Its own request id, never the chain's (which it skips); a caller's acceptable one is kept.
    expect(early.headers['x-request-id']).not.toBe('from-the-chain');
    expect((await post(port, '/token', 'd=4', { 'x-request-id': 'req-42' })).headers['x-request-id']).toBe('req-42');

    parked.shift()!();
    await expect(busy).resolves.toMatchObject({ status: 200, body: '{"body":"a=1"}' });
    // A slot is free again: the early shed lets the next request through to its door.
    const next = post(port, '/token', 'e=5');
    await expect.poll(() => parked.length).toBe(1);
    parked.shift()!();
    await expect(next).resolves.toMatchObject({ status: 200, body: '{"body":"e=5"}' });
    const { body } = await metrics.exposition();
    expect(body).toContain('tessera_requests_shed_total{endpoint="token",reason="queue_full"} 2');
    expect(body).toContain('tessera_requests_shed_total{endpoint="plain",reason="queue_full"} 1');
  });
});

describe('receiveBodyFirst before admissionControl', () => {
  let server: Server | undefined;
  afterEach(async () => {
    server?.closeAllConnections();
    await new Promise((done) => server?.close(done) ?? done(undefined));
    server = undefined;
  });

  /** The broker's order: body in, then a slot, then the door, which reads the body (again) through `readBodyText`. */
  async function door(maxBytes: number) {
    const metrics = new PromMetrics();
    const app = new Koa();
    app.use(renderErrors(silentLogger));
    app.use(receiveBodyFirst(maxBytes));
    app.use(admissionControl({ max: 1, queue: 0, queueTimeoutMs: 0, retryAfterSeconds: 1 }, metrics, silentLogger).door('token'));
    app.use(async (ctx) => {
      ctx.body = { body: await readBodyText(ctx, maxBytes), again: await readBodyText(ctx, maxBytes) };
    });
    server = createServer(app.callback());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return { metrics, port: (server.address() as AddressInfo).port };
  }

  function post(port: number, length: number, sent: string) {
    return new Promise<{ status: number; body: string }>((done, fail) => {
      const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/token', headers: { 'content-length': length, connection: 'close' } }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
        res.once('end', () => done({ status: res.statusCode!, body }));
      });
      req.once('error', fail);
      req.end(sent);
    });
  }

  it('a stalled upload holds no slot, and every reader of a request gets the one body read', async () => {
    const { metrics, port } = await door(1_024);
    // The only slot would be this request's, had it been admitted before its body arrived.
    const stalled = new Promise<void>((done) => {
      const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/token', headers: { 'content-length': 500 } });
      req.once('error', () => undefined);
      req.write('a=1', () => done());
    });
    await stalled;
    await new Promise((pause) => setTimeout(pause, 50));
    expect((await metrics.exposition()).body).toContain('tessera_requests_in_flight 0');

    await expect(post(port, 3, 'b=2')).resolves.toEqual({ status: 200, body: '{"body":"b=2","again":"b=2"}' });
    expect((await metrics.exposition()).body).not.toContain('tessera_requests_shed_total{');
  });

  it('leaves a body it cannot read to the door, which refuses it as before', async () => {
    const { port } = await door(8);
    const tooLarge = await post(port, 9, 'a=1234567');
    expect(tooLarge.status).toBe(413);
    expect(JSON.parse(tooLarge.body)).toEqual({ error: 'invalid_request', error_description: 'request body too large' });
  });
});
