import { mkdtemp } from 'node:fs/promises';
import { request, type RequestListener, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createBroker, type Broker } from '../src/broker.js';
import { MemoryAuditSink } from '../src/audit/audit-log.js';
import { validateConfig } from '../src/config/load.js';
import { createGuardedServer, type ConnectionLimits } from '../src/http/connection-guard.js';

// Bounds are small so the tests are fast; assertions allow several times the bound (loaded CI machines).
const FAST = { firstByteTimeoutMs: 200, headersTimeoutMs: 300, requestTimeoutMs: 600, idleTimeoutMs: 5_000, keepAliveTimeoutMs: 200 };

function limits(connections: Partial<ConnectionLimits>): ConnectionLimits {
  return validateConfig({ issuer: 'http://127.0.0.1:1', limits: { connections } }).limits.connections;
}

/** A real pino logger writing to memory: the warn lines the guard emits. */
function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { log, warnings: () => lines.filter((line) => line.level === 40 && String(line.msg).startsWith('connection cap reached')) };
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function listening(server: Server): Promise<number> {
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  cleanups.push(
    () =>
      new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      }),
  );
  return (server.address() as AddressInfo).port;
}

async function startGuarded(connections: Partial<ConnectionLimits>, handler: RequestListener = (_req, res) => res.end('ok')) {
  const { log, warnings } = capturingLogger();
  const server = createGuardedServer(limits(connections), log, handler);
  return { server, port: await listening(server), warnings };
}

interface RawClient {
  readonly socket: Socket;
  /** Resolves when the server closes the connection, with how long it stayed open and what the server sent. */
  readonly closed: Promise<{ afterMs: number; received: string }>;
}

/** A raw TCP client, so a test controls every byte (or the lack of one). */
async function rawClient(port: number): Promise<RawClient> {
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((done) => socket.once('connect', () => done()));
  const openedAt = Date.now();
  let received = '';
  socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
  socket.on('error', () => undefined);
  const closed = new Promise<{ afterMs: number; received: string }>((done) => socket.once('close', () => done({ afterMs: Date.now() - openedAt, received })));
  cleanups.push(async () => void socket.destroy());
  return { socket, closed };
}

/** Rejects if the connection is still open after `ms`. */
function closedWithin(client: RawClient, ms: number): Promise<{ afterMs: number; received: string }> {
  return Promise.race([client.closed, new Promise<never>((_, fail) => setTimeout(() => fail(new Error(`connection still open after ${ms} ms`)), ms))]);
}

/** One request on its own connection (no agent pool), so the connection count is known. */
function get(port: number, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((done, fail) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => done({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', fail);
    req.end();
  });
}

/** Opens silent connections one after another, each accepted before the next, so their age order is known. */
async function silentClients(server: Server, port: number, count: number): Promise<RawClient[]> {
  const clients: RawClient[] = [];
  for (let i = 0; i < count; i++) {
    const accepted = new Promise((done) => server.once('connection', done));
    clients.push(await rawClient(port));
    await accepted;
  }
  return clients;
}

describe('guardConnections: every phase is bounded', () => {
  it('closes a connection that never sends a byte within the first-byte bound', async () => {
    // Headers bound far above: only the first-byte bound can close it in time (Node's sweep would send a 408).
    const { port } = await startGuarded({ ...FAST, headersTimeoutMs: 8_000, requestTimeoutMs: 10_000 });
    const silent = await rawClient(port);
    const { afterMs, received } = await closedWithin(silent, 2_000);
    expect(afterMs).toBeGreaterThanOrEqual(150);
    expect(received).toBe('');
  });

  it('closes a slow-loris sending headers byte by byte at the headers bound', async () => {
    const { port } = await startGuarded(FAST);
    const loris = await rawClient(port);
    const headers = 'GET / HTTP/1.1\r\nHost: x\r\nX-Padding: ' + 'a'.repeat(1_000);
    let sent = 0;
    const drip = setInterval(() => {
      if (!loris.socket.destroyed && sent < headers.length) loris.socket.write(headers[sent++] ?? '');
    }, 20);
    cleanups.push(async () => clearInterval(drip));
    const { received } = await closedWithin(loris, 3_000);
    // Bytes kept arriving, so neither the first-byte nor the idle bound applied: Node's headers bound did.
    expect(received).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('closes a request whose body stalls', async () => {
    const { port } = await startGuarded(FAST, (req, res) => {
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    const stalled = await rawClient(port);
    stalled.socket.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nonly ten b');
    const { received } = await closedWithin(stalled, 4_000);
    expect(received).not.toContain('ok');
  });

  it('closes a request whose body trickles in past the whole-request bound', async () => {
    const { port } = await startGuarded(FAST, (req, res) => {
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    const trickle = await rawClient(port);
    trickle.socket.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 10000\r\n\r\n');
    const drip = setInterval(() => void (trickle.socket.destroyed || trickle.socket.write('a')), 20);
    cleanups.push(async () => clearInterval(drip));
    const { received } = await closedWithin(trickle, 4_000);
    expect(received).not.toContain('ok');
  });

  it('closes a connection on which nothing moves, a request in progress included', async () => {
    const { port } = await startGuarded({ ...FAST, requestTimeoutMs: 10_000, idleTimeoutMs: 300 }, (req, res) => {
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    const stalled = await rawClient(port);
    stalled.socket.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nonly ten b');
    await closedWithin(stalled, 3_000);
  });

  it('closes an idle keep-alive connection after a response', async () => {
    const { port } = await startGuarded(FAST);
    const client = await rawClient(port);
    client.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    // keepAliveTimeoutMs plus Node's 1 s keep-alive buffer.
    const { received } = await closedWithin(client, 5_000);
    expect(received).toMatch(/^HTTP\/1\.1 200 /);
  });
});

describe('guardConnections: the connection cap', () => {
  it('evicts a silent connection so a normal client still gets a response at the cap, and warns once', async () => {
    const { server, port, warnings } = await startGuarded({ maxConnections: 20, firstByteTimeoutMs: 10_000, headersTimeoutMs: 10_000 });
    const silent = await silentClients(server, port, 20);

    const response = await get(port);
    expect(response).toEqual({ status: 200, body: 'ok' });
    // The longest-idle (first) silent connection made room.
    await closedWithin(silent[0]!, 2_000);
    expect(silent.slice(1).every((client) => !client.socket.destroyed)).toBe(true);

    const capWarnings = warnings();
    expect(capWarnings).toHaveLength(1);
    expect(capWarnings[0]).toMatchObject({ maxConnections: 20, evicted: 1, refused: 0 });
  });

  it('keeps a burst of silent connections from locking clients out', async () => {
    const { port } = await startGuarded({ maxConnections: 20, firstByteTimeoutMs: 10_000, headersTimeoutMs: 10_000 });
    await Promise.all(Array.from({ length: 60 }, () => rawClient(port)));
    const responses = await Promise.all(Array.from({ length: 5 }, () => get(port)));
    expect(responses.map((response) => response.status)).toEqual([200, 200, 200, 200, 200]);
  });

  it('evicts a connection still uploading its body at a trickle, so slow uploads cannot lock clients out', async () => {
    // The handler reads the body, as the token endpoint does; each upload sent one byte of 1000.
    const { server, port, warnings } = await startGuarded({ maxConnections: 4, requestTimeoutMs: 30_000, headersTimeoutMs: 10_000, idleTimeoutMs: 30_000 }, (req, res) => {
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    const uploads: RawClient[] = [];
    for (let i = 0; i < 4; i++) {
      const entered = new Promise((done) => server.once('request', done));
      const client = await rawClient(port);
      client.socket.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx');
      await entered;
      uploads.push(client);
    }
    expect(await get(port)).toEqual({ status: 200, body: 'ok' });
    await closedWithin(uploads[0]!, 2_000);
    expect(warnings()[0]).toMatchObject({ evicted: 1, refused: 0 });
  });

  it('refuses a newcomer while every connection has a request in flight, and the busy ones complete', async () => {
    let release!: () => void;
    const gate = new Promise<void>((done) => (release = done));
    let entered = 0;
    const allBusy = new Promise<void>((done) => {
      const check = () => (entered === 3 ? done() : setTimeout(check, 10));
      check();
    });
    const { port, warnings } = await startGuarded({ maxConnections: 3 }, (_req, res) => {
      entered += 1;
      void gate.then(() => res.end('done'));
    });
    const busy = [get(port), get(port), get(port)];
    await allBusy;

    const newcomer = await rawClient(port);
    newcomer.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    const { received } = await closedWithin(newcomer, 2_000);
    expect(received).toBe('');
    expect(entered).toBe(3);

    release();
    expect(await Promise.all(busy)).toEqual([0, 1, 2].map(() => ({ status: 200, body: 'done' })));
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]).toMatchObject({ maxConnections: 3, evicted: 0, refused: 1 });

    // Their requests finished, so their connections may be closed for a newcomer again.
    expect(await get(port)).toEqual({ status: 200, body: 'done' });
  });
});

describe('broker.listen', () => {
  let broker: Broker | undefined;
  afterEach(async () => {
    await broker?.close();
    broker = undefined;
  });

  it('serves through the guard configured by limits.connections', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tessera-guard-'));
    const config = validateConfig({
      issuer: 'http://127.0.0.1:1',
      dataDir,
      keys: { generate: true },
      limits: { connections: { maxConnections: 3, firstByteTimeoutMs: 300, headersTimeoutMs: 300 } },
    });
    const { log, warnings } = capturingLogger();
    broker = await createBroker(config, { logger: log, audit: new MemoryAuditSink() });
    const running = await broker.listen({ host: '127.0.0.1', port: 0 });
    const port = Number(new URL(running.url).port);

    const silent = await silentClients(running.server, port, 3);
    expect((await get(port, '/healthz')).status).toBe(200);
    expect(warnings()).toHaveLength(1);
    await Promise.all(silent.map((client) => closedWithin(client, 3_000)));
  });
});
