import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { RedisServer, redisSkipReason } from '../src/redis-server.js';
import { CLI, freePort, Serve, until } from './serve.js';
import { accessTokenPlugin, allowRule, API, ID_TOKEN, LoopbackIssuer, oidcPlugin, postToken, TestClient, TOKEN_EXCHANGE, servedBroker } from './support.js';

const started = new Set<Serve>();
afterEach(() => {
  for (const serve of started) if (serve.exit === undefined) serve.child.kill('SIGKILL');
  started.clear();
});

/** A fleet's process, with what its workers wrote to the stdout they share (the audit trail by default). */
class FleetServe extends Serve {
  stdout = '';
  constructor(child: ChildProcess, port: number) {
    super(child, port);
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (this.stdout += chunk));
  }
}

/** `tessera serve --workers N`; resolves once the primary printed its listening line (or the process exited). */
async function serveWorkers(configPath: string, port: number, workers: number): Promise<FleetServe> {
  const child = spawn(process.execPath, [CLI, 'serve', '--config', configPath, '--workers', String(workers)], {
    env: { ...process.env, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const serve = new FleetServe(child, port);
  started.add(serve);
  await until('the listening line or an exit', () => serve.stderr.includes('tessera listening on') || serve.exit !== undefined, 60_000);
  return serve;
}

function verify(...files: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [CLI, 'audit', 'verify', ...files], (error, stdout, stderr) => done({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }));
  });
}

const parsed = (text: string) =>
  text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as { seq: number; chain: string; event: string; decision?: string });

let idp: LoopbackIssuer;
let client: TestClient;
beforeAll(async () => {
  idp = await LoopbackIssuer.start();
  client = await TestClient.create('fleet-client');
});
afterAll(async () => {
  await idp?.close();
});

async function writeConfig(port: number, extra: Record<string, unknown>): Promise<{ path: string; issuer: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-workers-'));
  const issuer = `http://127.0.0.1:${port}`;
  const config = {
    issuer,
    ...servedBroker(idp.issuer, client),
    log: { level: 'info' },
    ...extra,
  };
  const path = join(dir, 'broker.json');
  await writeFile(path, JSON.stringify(config));
  return { path, issuer };
}

async function exchangeForm(issuer: string, subjectToken: string, assertion?: string): Promise<Record<string, string>> {
  return {
    grant_type: TOKEN_EXCHANGE,
    subject_token: subjectToken,
    subject_token_type: ID_TOKEN,
    audience: API,
    scope: 'read',
    ...(assertion ? { client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion } : await client.auth(issuer)),
  };
}

/** A POST /token sent by hand with `Expect: 100-continue`: after `continued()` it is in flight at a worker. */
class HeldRequest {
  received = '';
  ended = false;
  private constructor(
    readonly socket: Socket,
    readonly body: string,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (this.received += chunk));
    socket.on('error', () => undefined);
    socket.once('close', () => (this.ended = true));
  }

  static async open(port: number, body: string): Promise<HeldRequest> {
    const socket = connect(port, '127.0.0.1');
    await new Promise<void>((done, fail) => socket.once('connect', done).once('error', fail));
    const held = new HeldRequest(socket, body);
    socket.write(
      `POST /token HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${Buffer.byteLength(body)}\r\nExpect: 100-continue\r\n\r\n`,
    );
    await until('100 Continue', () => held.received.startsWith('HTTP/1.1 100 Continue\r\n\r\n'));
    socket.write(body.slice(0, 50));
    return held;
  }

  async finish(): Promise<{ status: number; head: string; body: string }> {
    this.socket.write(this.body.slice(50));
    await until('the response and the close', () => this.ended);
    const [head = '', ...rest] = this.received.replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, '').split('\r\n\r\n');
    return { status: Number(head.split(' ')[1]), head: head.toLowerCase(), body: rest.join('\r\n\r\n') };
  }
}

describe('tessera serve --workers', () => {
  it('refuses more than one worker on a memory store, with a message saying why', async () => {
    const port = await freePort();
    const { path } = await writeConfig(port, {});
    const serve = await serveWorkers(path, port, 2);
    await serve.exited;
    expect(serve.exit?.code).toBe(1);
    expect(serve.stderr).toContain('store.kind: memory cannot serve 2 workers: replay and revocation state would not be shared between them (use store.kind: redis)');
    expect(serve.stderr).not.toContain('tessera listening on');
  });

  it('refuses more than one worker appending to one audit file', async () => {
    const port = await freePort();
    const { path } = await writeConfig(port, { store: { kind: 'redis', url: 'redis://127.0.0.1:1' }, audit: { destination: { file: 'audit.jsonl' } } });
    const serve = await serveWorkers(path, port, 2);
    await serve.exited;
    expect(serve.exit?.code).toBe(1);
    expect(serve.stderr).toContain('audit.destination.file: 2 workers cannot share one hash-chained audit file');
    expect(serve.stderr).toContain('put {worker} in the path for a file per worker');
    expect(serve.stderr).not.toContain('tessera listening on');
  });

  it('refuses a --workers that is not a whole number from 1', async () => {
    const port = await freePort();
    const { path } = await writeConfig(port, {});
    const serve = await serveWorkers(path, port, 0);
    await serve.exited;
    expect(serve.exit?.code).toBe(2);
    expect(serve.stderr).toContain('--workers must be a whole number from 1 to 64');
  });

  describe('with a Redis store', () => {
    const unavailable = redisSkipReason();
    let redis: RedisServer;
    beforeAll(async () => {
      if (!unavailable) redis = await RedisServer.start();
    });
    afterAll(async () => {
      await redis?.stop();
    });
    beforeEach((ctx) => {
      if (unavailable) ctx.skip(unavailable);
    });

    it('two workers share one port and one replay cache; SIGTERM drains both and exits 0', async () => {
      const port = await freePort();
      const { path, issuer } = await writeConfig(port, { store: { kind: 'redis', url: redis.url, keyPrefix: `t${port}:` } });
      const serve = await serveWorkers(path, port, 2);
      expect(serve.exit, serve.stderr).toBeUndefined();
      expect(serve.stderr).toContain(`tessera listening on http://127.0.0.1:${port} (issuer ${issuer}, 2 workers)`);
      const fleet = (await serve.waitForLog('workers: every worker listening')).workers as number[];
      expect(new Set(fleet).size).toBe(2);

      const subjectToken = await idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 3600 });
      // One client assertion, sent twice on two connections (the cluster hands connections out in turn):
      // the second is a replay wherever it lands.
      const assertion = await client.assertion(issuer);
      const first = await postToken(`${issuer}/token`, await exchangeForm(issuer, subjectToken, assertion), { headers: { connection: 'close' } });
      const replayed = await postToken(`${issuer}/token`, await exchangeForm(issuer, subjectToken, assertion), { headers: { connection: 'close' } });
      expect(first.status, first.text).toBe(200);
      expect(replayed.status).toBe(401);
      expect(replayed.body).toMatchObject({ error: 'invalid_client' });
      expect(replayed.body).not.toHaveProperty('access_token');

      // Four requests held in flight across the fleet, then SIGTERM: each worker drains its own.
      const held = await Promise.all([0, 1, 2, 3].map(async () => HeldRequest.open(port, new URLSearchParams(await exchangeForm(issuer, subjectToken)).toString())));
      serve.child.kill('SIGTERM');
      await until('both workers draining', () => serve.logs.filter((line) => line.msg?.startsWith('drain: listener closed')).length === 2);
      const draining = serve.logs.filter((line) => line.msg?.startsWith('drain: listener closed'));
      expect(new Set(draining.map((line) => line.pid))).toEqual(new Set(fleet));
      for (const line of draining) expect(line.inFlight).toBeGreaterThanOrEqual(1);

      const answers = await Promise.all(held.map((request) => request.finish()));
      for (const answer of answers) {
        expect(answer.status, answer.body).toBe(200);
        expect(answer.head).toContain('connection: close');
        expect(JSON.parse(answer.body)).toHaveProperty('access_token');
      }
      await serve.exited;
      expect(serve.exit).toMatchObject({ code: 0, signal: null });
      expect(serve.logged('workers: every worker stopped')).toMatchObject({ status: 0 });
      expect(serve.logs.filter((line) => line.msg === 'shutdown: exiting').map((line) => line.status)).toEqual([0, 0]);
    }, 90_000);

    it('replaces a worker that dies, keeps serving meanwhile, and forwards SIGHUP', async () => {
      const port = await freePort();
      const { path, issuer } = await writeConfig(port, { store: { kind: 'redis', url: redis.url, keyPrefix: `t${port}:` } });
      const serve = await serveWorkers(path, port, 2);
      expect(serve.exit, serve.stderr).toBeUndefined();
      const [victim, survivor] = (await serve.waitForLog('workers: every worker listening')).workers as number[];
      process.kill(victim!, 'SIGKILL');
      const restarting = await serve.waitForLog('workers: worker exited unexpectedly');
      expect(restarting).toMatchObject({ workerPid: victim, signal: 'SIGKILL', restartInMs: 500, level: 40 });
      // The survivor serves every connection until the replacement is up.
      for (let i = 0; i < 3; i++) expect((await fetch(`${issuer}/readyz`, { headers: { connection: 'close' } })).status).toBe(200);
      const replaced = await serve.waitForLog('workers: replacement worker listening');
      expect([victim, survivor]).not.toContain(replaced.workerPid);

      serve.child.kill('SIGHUP');
      expect(await serve.waitForLog('workers: SIGHUP forwarded')).toMatchObject({ workers: 2 });
      await new Promise((done) => setTimeout(done, 300));
      expect(serve.exit).toBeUndefined();
      expect((await fetch(`${issuer}/readyz`)).status).toBe(200);

      serve.child.kill('SIGTERM');
      await serve.exited;
      expect(serve.exit).toMatchObject({ code: 0, signal: null });
    }, 90_000);

    it('two workers auditing to one stdout: each chain is named and the captured stream verifies', async () => {
      const port = await freePort();
      const { path, issuer } = await writeConfig(port, { store: { kind: 'redis', url: redis.url, keyPrefix: `t${port}:` } });
      const serve = await serveWorkers(path, port, 2);
      expect(serve.exit, serve.stderr).toBeUndefined();
      const subjectToken = await idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 3600 });
      // A new connection each: the cluster hands them to both workers. Some at once, so their writes meet.
      const calls = await Promise.all(Array.from({ length: 36 }, async () => postToken(`${issuer}/token`, await exchangeForm(issuer, subjectToken), { headers: { connection: 'close' } })));
      for (const call of calls) expect(call.status, call.text).toBe(200);
      serve.child.kill('SIGTERM');
      await serve.exited;
      expect(serve.exit).toMatchObject({ code: 0, signal: null });

      // Logs go to stderr: stdout holds audit lines only.
      const records = parsed(serve.stdout);
      const chains = new Map<string, number>();
      for (const record of records) chains.set(record.chain, (chains.get(record.chain) ?? 0) + (record.event === 'token' ? 1 : 0));
      expect([...chains.keys()].map((id) => id.slice(0, 3)).sort()).toEqual(['w1-', 'w2-']);
      expect([...chains.values()].reduce((sum, count) => sum + count, 0)).toBe(36);
      for (const count of chains.values()) expect(count).toBeGreaterThan(0);

      const dir = await mkdtemp(join(tmpdir(), 'tessera-workers-audit-'));
      const captured = join(dir, 'stdout.jsonl');
      await writeFile(captured, serve.stdout);
      expect(await verify(captured)).toEqual({ code: 0, stdout: `chain intact: ${records.length} records in 1 file (2 new chains begun)\n`, stderr: '' });

      // One changed record of one worker's chain is still found, at its line.
      const lines = serve.stdout.split('\n');
      const target = lines.findIndex((line, index) => index > 5 && line.includes('"decision":"allow"') && line.includes(`"chain":"${records[0]!.chain}"`));
      const nextOfChain = lines.findIndex((line, index) => index > target && line.includes(`"chain":"${records[0]!.chain}"`));
      expect(nextOfChain).toBeGreaterThan(target);
      lines[target] = lines[target]!.replace('"decision":"allow"', '"decision":"deny"');
      await writeFile(captured, lines.join('\n'));
      expect(await verify(captured)).toEqual({ code: 1, stdout: '', stderr: `${captured}:${target + 1}: changed: its hash is not the prev of the next record\n` });
    }, 90_000);

    it('two workers with {worker} files: a file each, a replaced worker goes on with its own chain, both verify', async () => {
      const port = await freePort();
      const { path, issuer } = await writeConfig(port, { store: { kind: 'redis', url: redis.url, keyPrefix: `t${port}:` }, audit: { destination: { file: 'audit/audit-{worker}.jsonl' } } });
      const dir = join(path, '..', 'audit');
      const serve = await serveWorkers(path, port, 2);
      expect(serve.exit, serve.stderr).toBeUndefined();
      const subjectToken = await idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 3600 });
      const exchange = async () => {
        const call = await postToken(`${issuer}/token`, await exchangeForm(issuer, subjectToken), { headers: { connection: 'close' } });
        expect(call.status, call.text).toBe(200);
      };
      for (let i = 0; i < 10; i++) await exchange();

      // Worker slot 1 dies; its replacement reopens audit-1.jsonl and continues the chain there.
      const victim = serve.logs.find((line) => line.slot === 1 && line.role !== 'primary' && typeof line.pid === 'number')!.pid as number;
      process.kill(victim, 'SIGKILL');
      await serve.waitForLog('workers: replacement worker listening');
      for (let i = 0; i < 10; i++) await exchange();
      serve.child.kill('SIGTERM');
      await serve.exited;
      expect(serve.exit).toMatchObject({ code: 0, signal: null });
      expect(serve.stdout).toBe('');

      const files = [join(dir, 'audit-1.jsonl'), join(dir, 'audit-2.jsonl')];
      const written = await Promise.all(files.map(async (file) => parsed(await readFile(file, 'utf8'))));
      for (const [index, records] of written.entries()) {
        // One chain per file, begun once: the replacement did not start another.
        expect(new Set(records.map((record) => record.chain)).size).toBe(1);
        expect(records[0]!.chain.startsWith(`w${index + 1}-`)).toBe(true);
        expect(records.filter((record) => record.event === 'chain')).toHaveLength(1);
        expect(records.map((record) => record.seq)).toEqual(records.map((_, seq) => seq + 1));
        expect(await verify(files[index]!)).toEqual({ code: 0, stdout: `chain intact: ${records.length} records in 1 file (1 new chain begun)\n`, stderr: '' });
      }
      expect(written.flat().filter((record) => record.event === 'token')).toHaveLength(20);
      expect(await verify(...files)).toMatchObject({ code: 0, stdout: expect.stringMatching(/^chain intact: \d+ records in 2 files \(2 new chains begun\)\n$/) });
    }, 90_000);
  });
});
