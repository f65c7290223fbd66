import { mkdtemp, rename, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { request } from 'node:https';
import { connect as connectTcp, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as connectTls, type TLSSocket } from 'node:tls';
import { pino } from 'pino';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createBroker, type Broker } from '../src/broker.js';
import { MemoryAuditSink } from '../src/audit/audit-log.js';
import { ConfigError } from '../src/config/errors.js';
import { validateConfig } from '../src/config/load.js';
import { TestPki, type IssuedCert } from './support/test-pki.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

let pki: TestPki;
beforeAll(async () => {
  pki = await TestPki.create();
});

function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { log, lines };
}

/** Writes `cert` as the PEM pair a broker in a fresh dir serves, and starts that broker. */
async function startTlsBroker(cert: IssuedCert, connections: Record<string, number> = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-tls-'));
  await writeFile(join(dir, 'tls.crt'), cert.certPem);
  await writeFile(join(dir, 'tls.key'), cert.keyPem);
  const { log, lines } = capturingLogger();
  const config = validateConfig({
    issuer: 'https://127.0.0.1:8443',
    dataDir: dir,
    keys: { generate: true },
    listen: { tls: { certFile: 'tls.crt', keyFile: 'tls.key', handshakeTimeoutMs: 300 } },
    limits: { connections },
  });
  const broker = await createBroker(config, { baseDir: dir, logger: log, audit: new MemoryAuditSink() });
  const running = await broker.listen({ host: '127.0.0.1', port: 0 });
  cleanups.push(() => broker.close());
  return { broker, running, dir, lines, port: Number(new URL(running.url).port) };
}

/** The fingerprint of the certificate a new TLS connection is offered (the client trusts only the test CA). */
function servedFingerprint(port: number): Promise<string> {
  return new Promise((done, fail) => {
    const socket = connectTls({ host: '127.0.0.1', port, ca: pki.caPem }, () => {
      done(socket.getPeerX509Certificate()!.fingerprint256);
      socket.destroy();
    });
    socket.once('error', fail);
  });
}

function getJson(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((done, fail) => {
    const req = request(url, { ca: pki.caPem, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => done({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> }));
    });
    req.once('error', fail);
    req.end();
  });
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 50));
  }
}

describe('listen.tls from PEM files', () => {
  it('serves HTTPS with the configured certificate and reports tls in /readyz', async () => {
    const cert = await pki.issue();
    const { running, port } = await startTlsBroker(cert);
    expect(running.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(await servedFingerprint(port)).toBe(cert.fingerprint);
    const ready = await getJson(`${running.url}/readyz`);
    expect(ready).toMatchObject({ status: 200, body: { status: 'ready', checks: { keys: 'ok', tls: 'ok' } } });
  });

  it('serves a replaced certificate to new connections without a restart; open connections keep theirs', async () => {
    const first = await pki.issue();
    const { port, dir, lines } = await startTlsBroker(first);
    const open = await new Promise<TLSSocket>((done, fail) => {
      const socket = connectTls({ host: '127.0.0.1', port, ca: pki.caPem }, () => done(socket)).once('error', fail);
    });
    cleanups.push(() => void open.destroy());

    const second = await pki.issue();
    // The way most tools write: a new file renamed over the old one (atomic per file), the key after the cert.
    await writeFile(join(dir, 'tls.crt.new'), second.certPem);
    await rename(join(dir, 'tls.crt.new'), join(dir, 'tls.crt'));
    await writeFile(join(dir, 'tls.key.new'), second.keyPem);
    await rename(join(dir, 'tls.key.new'), join(dir, 'tls.key'));

    await until('the new certificate', async () => (await servedFingerprint(port)) === second.fingerprint);
    expect(open.getPeerX509Certificate()!.fingerprint256).toBe(first.fingerprint);
    expect(lines.find((line) => String(line.msg).startsWith('tls: certificate reloaded'))).toMatchObject({ fingerprint: second.fingerprint });
  });

  it('keeps the current certificate when the new files do not make a pair, and logs why', async () => {
    const first = await pki.issue();
    const { port, dir, lines, running } = await startTlsBroker(first);
    const other = await pki.issue();
    // A new certificate with the old key: a half-finished rotation.
    await writeFile(join(dir, 'tls.crt'), other.certPem);
    await until('the refusal', () => lines.some((line) => String(line.msg).startsWith('tls: the changed PEM files were refused')));
    expect(lines.find((line) => String(line.msg).startsWith('tls: the changed PEM files were refused'))).toMatchObject({ level: 40, reason: 'the key does not match the certificate' });
    expect(await servedFingerprint(port)).toBe(first.fingerprint);
    await writeFile(join(dir, 'tls.crt'), 'not a certificate');
    await until('the second refusal', () => lines.filter((line) => String(line.msg).startsWith('tls: the changed PEM files were refused')).length >= 2);
    expect(await servedFingerprint(port)).toBe(first.fingerprint);
    expect((await getJson(`${running.url}/readyz`)).body).toMatchObject({ status: 'ready', checks: { tls: 'ok' } });
    // The key arriving later completes the pair: then it is served.
    await writeFile(join(dir, 'tls.crt'), other.certPem);
    await writeFile(join(dir, 'tls.key'), other.keyPem);
    await until('the completed pair', async () => (await servedFingerprint(port)) === other.fingerprint);
  });

  it('refuses to start on a key that does not match the certificate, or an http issuer', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-tls-'));
    const [cert, other] = [await pki.issue(), await pki.issue()];
    await writeFile(join(dir, 'tls.crt'), cert.certPem);
    await writeFile(join(dir, 'tls.key'), other.keyPem);
    const config = validateConfig({ issuer: 'https://127.0.0.1:8443', dataDir: dir, keys: { generate: true }, listen: { tls: { certFile: 'tls.crt', keyFile: 'tls.key' } } });
    await expect(createBroker(config, { baseDir: dir, logger: pino({ level: 'silent' }), audit: new MemoryAuditSink() })).rejects.toThrow(
      new ConfigError(['listen.tls: the key does not match the certificate']),
    );
    await expect(createBroker({ ...config, listen: { ...config.listen, tls: { certFile: 'missing.crt', keyFile: 'tls.key', handshakeTimeoutMs: 5_000 } } }, { baseDir: dir, logger: pino({ level: 'silent' }), audit: new MemoryAuditSink() })).rejects.toThrow('listen.tls.certFile: cannot be read');
    expect(() => validateConfig({ issuer: 'http://127.0.0.1:8443', listen: { tls: { certFile: 'tls.crt', keyFile: 'tls.key' } } })).toThrow('issuer: must be https when listen.tls is set');
  });
});

describe('listen.tls.spiffe without an agent', () => {
  it('starts, but /readyz says tls is waiting for the first X.509-SVID', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-tls-'));
    const config = validateConfig({ issuer: 'https://127.0.0.1:8443', dataDir: dir, keys: { generate: true }, listen: { tls: { spiffe: { socket: `unix://${join(dir, 'no-agent.sock')}` } } } });
    const broker = await createBroker(config, { baseDir: dir, logger: pino({ level: 'silent' }), audit: new MemoryAuditSink() });
    cleanups.push(() => broker.close());
    const probe = createHttpServer(broker.app.callback());
    await new Promise<void>((done) => probe.listen(0, '127.0.0.1', done));
    cleanups.push(() => new Promise<void>((done) => probe.close(() => done())));
    const response = await fetch(`http://127.0.0.1:${(probe.address() as { port: number }).port}/readyz`, { headers: { connection: 'close' } });
    expect(response.status).toBe(503);
    expect(await response.json()).toMatchObject({ checks: { keys: 'ok', tls: 'waiting for the first X.509-SVID from the Workload API' } });
    await expect(createBroker({ ...config, listen: { ...config.listen, tls: { spiffe: { socket: 'http://nope' }, handshakeTimeoutMs: 5_000 } } }, { baseDir: dir, logger: pino({ level: 'silent' }), audit: new MemoryAuditSink() })).rejects.toThrow(/^listen\.tls\.spiffe\.socket: /);
  });
});

describe('the connection guard over TLS', () => {
  const FAST = { firstByteTimeoutMs: 200, headersTimeoutMs: 400, requestTimeoutMs: 800, idleTimeoutMs: 5_000, keepAliveTimeoutMs: 5_000 };

  function tcp(port: number): Promise<{ socket: Socket; closed: Promise<number> }> {
    return new Promise((done) => {
      const socket = connectTcp(port, '127.0.0.1', () => {
        const opened = Date.now();
        done({ socket, closed: new Promise((closed) => socket.once('close', () => closed(Date.now() - opened))) });
      });
      socket.on('error', () => undefined);
      cleanups.push(() => void socket.destroy());
    });
  }

  it('closes a silent connection at the first-byte bound and a stalled handshake at handshakeTimeoutMs', async () => {
    const { port } = await startTlsBroker(await pki.issue(), FAST);
    const silent = await tcp(port);
    expect(await silent.closed).toBeLessThan(2_000);
    // One byte of a ClientHello, then nothing: past the first-byte bound, only the handshake bound applies.
    const stalled = await tcp(port);
    stalled.socket.write(Buffer.from([0x16]));
    const stalledFor = await stalled.closed;
    expect(stalledFor).toBeGreaterThanOrEqual(250);
    expect(stalledFor).toBeLessThan(3_000);
  });

  it('at the cap evicts an idle TLS connection for a newcomer, never one with a request in flight', async () => {
    const cert = await pki.issue();
    const { port, running } = await startTlsBroker(cert, { ...FAST, maxConnections: 2 });
    const keepAlive = (): Promise<TLSSocket> =>
      new Promise((done, fail) => {
        const socket = connectTls({ host: '127.0.0.1', port, ca: pki.caPem }, () => done(socket)).once('error', fail);
        cleanups.push(() => void socket.destroy());
      });
    // A busy connection: headers sent, body pending (the readiness probe takes no body, so use a POST).
    const busy = await keepAlive();
    let busyAnswer = '';
    busy.setEncoding('utf8').on('data', (chunk: string) => (busyAnswer += chunk));
    busy.write('POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\n\r\n');
    const idle = await keepAlive();
    const idleClosed = new Promise<void>((done) => idle.once('close', () => done()));
    // The cap counts TCP connections; the newcomer's handshake may only start once a slot is free.
    const ready = await getJson(`${running.url}/readyz`);
    expect(ready.status).toBe(200);
    await idleClosed;
    expect(busy.destroyed).toBe(false);
    busy.write('a=b&c');
    await until('the busy request answered', () => busyAnswer.startsWith('HTTP/1.1 400'));
  });
});

describe('broker over TLS drains', () => {
  it('answers the request in flight and closes', async () => {
    const { broker, port } = await startTlsBroker(await pki.issue());
    const socket = await new Promise<TLSSocket>((done, fail) => {
      const s = connectTls({ host: '127.0.0.1', port, ca: pki.caPem }, () => done(s)).once('error', fail);
    });
    let answer = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => (answer += chunk));
    const closed = new Promise<void>((done) => socket.once('close', () => done()));
    socket.write('POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\n\r\n');
    await new Promise((done) => setTimeout(done, 100));
    const draining = (broker as Broker).drain();
    await new Promise((done) => setTimeout(done, 100));
    socket.write('a=b&c');
    const outcome = await draining;
    await closed;
    expect(answer).toMatch(/^HTTP\/1\.1 400/);
    expect(answer.toLowerCase()).toContain('connection: close');
    expect(outcome).toMatchObject({ completed: 1, cut: 0, timedOut: false });
  });
});


