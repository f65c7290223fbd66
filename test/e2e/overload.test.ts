import { fork, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseConfigText, type BrokerConfig } from '@tessera/core';
import { freePort, killServes, Serve } from './serve.js';
import { accessTokenPlugin, allowRule, API, ID_TOKEN, LoopbackIssuer, oidcPlugin, postToken, TestClient, TOKEN_EXCHANGE, servedBroker } from './support.js';

/** The shipped defaults of limits.inFlight, written out so the bounds below can be derived from them. */
const IN_FLIGHT = { max: 32, queue: 64, queueTimeoutMs: 200, retryAfterSeconds: 1 };
const DOC = resolve(import.meta.dirname, '../../docs/operations.md');

/** The `limits` block of the operations guide's capacity section, as the broker reads it. */
async function docLimits(): Promise<BrokerConfig['limits']> {
  const text = await readFile(DOC, 'utf8');
  const marker = text.indexOf('<!-- tested: test/e2e/overload.test.ts -->');
  const block = /```yaml\n([\s\S]*?)```/.exec(text.slice(marker));
  if (marker < 0 || !block) throw new Error('docs/operations.md: no example block marked test/e2e/overload.test.ts');
  return parseConfigText(`issuer: https://broker.example\n${block[1]}`, { file: DOC, baseDir: tmpdir() }).config.limits;
}
/**
 * An admitted request waits at most queueTimeoutMs for a slot, then shares the CPU with at most max-1 others
 * (tens of ms at the measured capacity). What no in-process bound sees is the wait before the broker reads a
 * request at all, when the machine gives it less CPU than during the capacity run (the generator alone works
 * three times harder now): the rest of the margin covers that on a loaded 2-core machine. Without the
 * bound, p99 passes 10 s within these 3 s at 3× (docs/operations.md).
 */
const ADMITTED_P99_BOUND_MS = IN_FLIGHT.queueTimeoutMs + 1_800;
/** Most sheds are immediate (queue full); the rest waited queueTimeoutMs. Same margin for the unseen wait. */
const SHED_P99_BOUND_MS = IN_FLIGHT.queueTimeoutMs + 1_300;
const OVERLOAD = 3;
const OVERLOAD_MS = 3_000;

type Answer = { status: number; ms: number; retryAfter?: string; error?: string; lagMs?: number };
type OpenRun = { sent: number; seconds: number; cpuSeconds: number; answers: Answer[]; probes: Answer[] };

/** The load generator process: requests are sent and timed there, never in the test runner. */
class Generator {
  readonly #child: ChildProcess;
  readonly #waiting = new Map<number, { done: (value: unknown) => void; fail: (error: Error) => void }>();
  #next = 0;

  constructor() {
    this.#child = fork(resolve(import.meta.dirname, 'fixtures/load-generator.mjs'), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.#child.on('message', ({ id, result, error }: { id: number; result?: unknown; error?: string }) => {
      const waiter = this.#waiting.get(id)!;
      this.#waiting.delete(id);
      if (error) waiter.fail(new Error(error));
      else waiter.done(result);
    });
  }

  call<T>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = (this.#next += 1);
    return new Promise<T>((done, fail) => {
      this.#waiting.set(id, { done: done as (value: unknown) => void, fail });
      this.#child.send({ id, cmd, ...args });
    });
  }

  kill(): void {
    this.#child.kill('SIGKILL');
  }
}

/** CPU seconds a process has used so far, from /proc (Linux); NaN elsewhere. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (stat === undefined) return Number.NaN;
  // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th, in clock ticks (100 Hz on Linux).
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function percentile(values: readonly number[], q: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

let idp: LoopbackIssuer;
let client: TestClient;
let generator: Generator | undefined;
beforeAll(async () => {
  idp = await LoopbackIssuer.start();
  client = await TestClient.create('load-client');
});
afterAll(async () => {
  await idp?.close();
});
afterEach(() => {
  generator?.kill();
  generator = undefined;
  killServes();
});

describe('tessera serve at 3× its measured capacity', () => {
  it('sheds the excess at once with 503 and Retry-After, keeps the p99 of admitted requests bounded, and keeps answering probes', async () => {
    // The guide's example: the in-flight defaults, and a per-client limit the load client's own replaces.
    const limits = await docLimits();
    expect(limits.inFlight).toEqual(IN_FLIGHT);
    expect(limits.perClient).toEqual({ requests: 600, windowSeconds: 60 });
    const port = await freePort();
    const dir = await mkdtemp(join(tmpdir(), 'tessera-overload-'));
    const issuer = `http://127.0.0.1:${port}`;
    const configPath = join(dir, 'broker.json');
    await writeFile(
      configPath,
      JSON.stringify({
        issuer,
        ...servedBroker(idp.issuer, client),
        // Its own limit, far above the load, so every request also passes the rate limiter's count.
        clients: [{ ...client.config(['token_exchange']), rateLimit: { requests: 1_000_000, windowSeconds: 60 } }],
        audit: { destination: { file: 'audit.jsonl' } },
        log: { level: 'warn' },
        limits: { inFlight: limits.inFlight, perClient: limits.perClient },
      }),
    );
    const serve = await Serve.start(configPath, port);
    generator = new Generator();
    await generator.call('init', {
      port,
      tokenEndpoint: `${issuer}/token`,
      subjectToken: await idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 3600 }),
      audience: API,
      clientId: client.id,
      privateJwk: client.key.privateJwk,
      alg: client.key.alg,
      kid: client.key.kid,
    });

    // Warm-up: JWKS fetched, code paths compiled.
    let answered = (await generator.call<{ answers: Answer[] }>('closed', { concurrency: 4, durationMs: 500 })).answers.length;
    // Capacity: closed-loop clients double until throughput stops rising (two levels in a row without a
    // tenth more: one level can dip on a shared machine), never past max, so nothing is shed while measuring.
    const ramp: { concurrency: number; perSecond: number; brokerCores: number }[] = [];
    let flat = 0;
    for (let concurrency = 2; concurrency <= IN_FLIGHT.max && flat < 2; concurrency *= 2) {
      const best = Math.max(0, ...ramp.map((step) => step.perSecond));
      const cpuBefore = await cpuSeconds(serve.child.pid!);
      const level = await generator.call<{ concurrency: number; perSecond: number; seconds: number; answers: Answer[] }>('closed', { concurrency, durationMs: 700 });
      expect(level.answers.filter((answer) => answer.status !== 200)).toEqual([]);
      answered += level.answers.length;
      ramp.push({ concurrency, perSecond: Math.round(level.perSecond), brokerCores: Number((((await cpuSeconds(serve.child.pid!)) - cpuBefore) / level.seconds).toFixed(2)) });
      flat = level.perSecond > best * 1.1 ? 0 : flat + 1;
    }
    const measured = ramp.reduce((best, step) => (step.perSecond > best.perSecond ? step : best));
    const capacity = measured.perSecond;
    const rate = OVERLOAD * capacity;

    // A run in which the machine gave the broker much less CPU than while its capacity was measured was
    // not a run at 3× its capacity but far beyond: it says nothing about the bound, so it is run again.
    let run: OpenRun;
    let brokerCores: number;
    let shedTotal = 0;
    let attempt = 0;
    do {
      attempt += 1;
      await generator.call('fill', { count: Math.ceil((capacity * OVERLOAD_MS) / 1000) * 2 });
      const cpuBefore = await cpuSeconds(serve.child.pid!);
      run = await generator.call<OpenRun>('open', { rate, durationMs: OVERLOAD_MS, probePath: '/healthz' });
      brokerCores = ((await cpuSeconds(serve.child.pid!)) - cpuBefore) / run.seconds;
      answered += run.answers.filter((answer) => answer.status === 200).length;
      shedTotal += run.answers.filter((answer) => answer.status === 503).length;
    } while (attempt < 3 && brokerCores < measured.brokerCores * 0.7);

    const admitted = run.answers.filter((answer) => answer.status === 200);
    const shed = run.answers.filter((answer) => answer.status === 503);
    const report = {
      ramp,
      capacityPerSecond: capacity,
      offeredPerSecond: rate,
      attempt,
      sent: run.sent,
      admitted: admitted.length,
      admittedPerSecond: Math.round(admitted.length / run.seconds),
      admittedP50Ms: Math.round(percentile(admitted.map((answer) => answer.ms), 0.5)),
      admittedP99Ms: Math.round(percentile(admitted.map((answer) => answer.ms), 0.99)),
      shed: shed.length,
      shedRatio: Number((shed.length / run.answers.length).toFixed(2)),
      shedP50Ms: Math.round(percentile(shed.map((answer) => answer.ms), 0.5)),
      shedP99Ms: Math.round(percentile(shed.map((answer) => answer.ms), 0.99)),
      probeP99Ms: Math.round(percentile(run.probes.map((answer) => answer.ms), 0.99)),
      generatorLagP99Ms: Math.round(percentile(run.answers.map((answer) => answer.lagMs ?? 0), 0.99)),
      // Cores each process used while the load ran (NaN for the broker off Linux: never a retry then).
      brokerCores: Number(brokerCores.toFixed(2)),
      generatorCores: Number((run.cpuSeconds / run.seconds).toFixed(2)),
    };
    console.log(`overload: ${JSON.stringify(report)}`);

    expect(run.answers).toHaveLength(run.sent);
    // Every request got an answer: an exchange or a shed, no connection errors, no other status.
    expect(run.answers.filter((answer) => answer.status !== 200 && answer.status !== 503)).toEqual([]);
    expect(shed.every((answer) => answer.retryAfter === String(IN_FLIGHT.retryAfterSeconds))).toBe(true);
    expect(shed.length).toBeGreaterThan(run.sent * 0.1);
    // Shedding is cheap, so the broker keeps doing useful work at a good share of its capacity.
    expect(report.admittedPerSecond).toBeGreaterThan(capacity * 0.2);
    expect(report.admittedP99Ms).toBeLessThanOrEqual(ADMITTED_P99_BOUND_MS);
    expect(report.shedP99Ms).toBeLessThanOrEqual(SHED_P99_BOUND_MS);
    // Probes are never shed.
    expect(run.probes.length).toBeGreaterThan(0);
    expect(run.probes.every((probe) => probe.status === 200)).toBe(true);
    // They share the event loop, so they see the same unseen wait as admitted requests, never the queue.
    expect(report.probeP99Ms).toBeLessThanOrEqual(ADMITTED_P99_BOUND_MS);

    // Sheds are counted and logged (once per interval), not audited: they never reached a decision.
    const metrics = await (await fetch(`${issuer}/metrics`)).text();
    const counted = [...metrics.matchAll(/^tessera_requests_shed_total\{endpoint="token",reason="\w+"\} (\d+)$/gm)].reduce((sum, match) => sum + Number(match[1]), 0);
    expect(counted).toBe(shedTotal);
    expect(serve.logged('overload: requests shed')).toMatchObject({ max: IN_FLIGHT.max, queue: IN_FLIGHT.queue });
    // Every exchange answered 200 (warm-up and ramp included) has its record, and nothing else does.
    const auditPath = join(dir, 'audit.jsonl');
    // Token decisions only: the trail also holds its own records (the new-chain record at startup).
    const audited = async () =>
      (await readFile(auditPath, 'utf8'))
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { event: string; decision: string; reason?: string })
        .filter((record) => record.event === 'token');
    let records = await audited();
    for (let tries = 0; records.length < answered && tries < 50; tries += 1) {
      await new Promise((pause) => setTimeout(pause, 100));
      records = await audited();
    }
    expect(records.filter((record) => record.decision !== 'allow')).toEqual([]);
    expect(records).toHaveLength(answered);
  }, 60_000);
});

describe('tessera serve with every in-flight slot wanted by a stalled upload', () => {
  it('admits a request only once its body is in: stalled uploads hold connections, not slots', async () => {
    const max = 2;
    const port = await freePort();
    const dir = await mkdtemp(join(tmpdir(), 'tessera-stalled-'));
    const issuer = `http://127.0.0.1:${port}`;
    const configPath = join(dir, 'broker.json');
    await writeFile(
      configPath,
      JSON.stringify({
        issuer,
        ...servedBroker(idp.issuer, client),
        log: { level: 'warn' },
        // No queue: a request that finds every slot taken is shed at once.
        limits: { inFlight: { max, queue: 0, queueTimeoutMs: 0, retryAfterSeconds: 1 } },
      }),
    );
    await Serve.start(configPath, port);

    // Headers of a token request announcing 500 bytes, a first few of them, then nothing.
    const stalled: Socket[] = [];
    const answers: string[] = [];
    const head = (i: number) => `grant_type=${encodeURIComponent(TOKEN_EXCHANGE)}&pad=${i}`;
    for (let i = 0; i < max; i += 1) {
      const socket = connect(port, '127.0.0.1');
      await new Promise((done) => socket.once('connect', done));
      socket.write(`POST /token HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\n${head(i)}`);
      answers.push('');
      socket.setEncoding('utf8').on('data', (chunk: string) => (answers[i] += chunk));
      stalled.push(socket);
    }
    try {
      // Long enough for the broker to have read both sets of headers and routed both requests.
      await new Promise((pause) => setTimeout(pause, 300));

      const started = performance.now();
      const exchange = await postToken(`${issuer}/token`, {
        grant_type: TOKEN_EXCHANGE,
        subject_token: await idp.mint({ sub: 'alice', aud: issuer }),
        subject_token_type: ID_TOKEN,
        audience: API,
        ...(await client.auth(issuer)),
      });
      const ms = performance.now() - started;
      expect(exchange.status, exchange.text).toBe(200);
      expect(exchange.body.access_token).toEqual(expect.any(String));
      expect(ms).toBeLessThan(1_000);

      // The stalled uploads were still open and unanswered; the first one, completed, is handled as usual.
      expect(answers).toEqual(['', '']);
      expect(stalled.every((socket) => !socket.destroyed)).toBe(true);
      // write, not end: Node's server drops a request whose client half-closes before it is answered.
      stalled[0]!.write('&'.repeat(500 - Buffer.byteLength(head(0))));
      await expect.poll(() => answers[0], { timeout: 5_000 }).toMatch(/^HTTP\/1\.1 401 /);
      expect(answers[0]).toContain('"error":"invalid_client"');
    } finally {
      for (const socket of stalled) socket.destroy();
    }
  }, 30_000);
});
