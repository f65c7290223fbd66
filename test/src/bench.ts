/**
 * `npm run bench`: token exchanges per second over loopback HTTP, against an empty Koa handler measured in
 * the same run on the same machine. Each server runs in its own child process; this process only generates
 * load (pre-signed tokens, fixed concurrency, keep-alive), so the two numbers share every condition.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Agent, request } from 'node:http';
import { randomUUID } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { createServer as createNetServer } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { SignJWT } from 'jose';
import Koa from 'koa';
import { createBroker, silentLogger, validateConfig, MemoryAuditSink } from '@tessera/core';
import { generateTestKey, LoopbackIssuer, type TestKey } from '@tessera/plugin-testkit';
import { redisUnavailableReason, RedisServer } from './redis-server.js';

const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 4000);
const WARMUP = 400;
const API = 'https://api.example.test';

interface Phase {
  readonly name: string;
  readonly perSecond: number;
  readonly p50: number;
  readonly p99: number;
  readonly ok: number;
}

async function serve(kind: string): Promise<void> {
  if (kind === 'koa') {
    const app = new Koa();
    app.use((ctx) => {
      ctx.body = {};
    });
    const server = app.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${(server.address() as { port: number }).port}` })}\n`));
    return;
  }
  const input = JSON.parse(process.env.BENCH_BROKER_CONFIG!) as Record<string, unknown>;
  const { createServer } = await import('node:http');
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const issuer = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  // The audit sink is in memory (and trimmed) so the benchmark measures the pipeline, not terminal I/O;
  // BENCH_AUDIT_FILE=path measures the configured file sink instead (BENCH_AUDIT_FSYNC: never|always|interval).
  const file = process.env.BENCH_AUDIT_FILE;
  const audit = new MemoryAuditSink();
  setInterval(() => audit.records.splice(0), 1000).unref();
  const broker = file
    ? await createBroker(validateConfig({ ...input, issuer, audit: { destination: { file }, fsync: process.env.BENCH_AUDIT_FSYNC ?? 'never' } }), { logger: silentLogger })
    : await createBroker(validateConfig({ ...input, issuer }), { logger: silentLogger, audit });
  server.on('request', broker.app.callback());
  process.stdout.write(`${JSON.stringify({ url: issuer })}\n`);
}

async function startChild(kind: string, env: Record<string, string> = {}): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--serve', kind], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`${kind} server exited with ${code}`)));
  });
  return { url: (JSON.parse(line) as { url: string }).url, child };
}

/** One POST over a keep-alive socket; resolves with the status once the body is drained. */
function post(agent: Agent, url: URL, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const call = request(
      url,
      { method: 'POST', agent, headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) } },
      (response) => {
        response.resume();
        response.on('end', () => resolve(response.statusCode ?? 0));
      },
    );
    call.on('error', reject);
    call.end(body);
  });
}

async function load(name: string, target: string, bodies: string[]): Promise<Phase> {
  const url = new URL(target);
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const latencies: number[] = [];
  let next = 0;
  let ok = 0;
  const deadline = Date.now() + 60_000; // bounded in time whatever happens
  const worker = async () => {
    while (next < bodies.length && Date.now() < deadline) {
      const body = bodies[next++]!;
      const started = performance.now();
      const status = await post(agent, url, body);
      latencies.push(performance.now() - started);
      if (status === 200) ok++;
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (performance.now() - started) / 1000;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
  return { name, perSecond: latencies.length / seconds, p50: at(0.5), p99: at(0.99), ok };
}

async function assertion(key: TestKey, audience: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ jti: randomUUID() })
    .setProtectedHeader({ alg: key.alg, kid: key.kid })
    .setIssuer('bench-client')
    .setSubject('bench-client')
    .setAudience(audience)
    .setIssuedAt(now)
    .setExpirationTime(now + 240)
    .sign(key.privateKey);
}

/** Exchanges `subjectToken` once, outside timing, for a broker token naming the client itself. */
async function ownToken(tokenEndpoint: string, subjectToken: string, clientAssertion: string): Promise<string> {
  const response = await fetch(tokenEndpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: subjectToken,
      subject_token_type: 'urn:ietf:params:oauth:token-type:id_token',
      audience: 'bench-client',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: clientAssertion,
    }),
  });
  const body = (await response.json()) as { access_token?: string };
  if (!body.access_token) throw new Error(`could not get the actor token: ${JSON.stringify(body)}`);
  return body.access_token;
}

/** Plain exchange bodies, warm-up included. Client assertions are single-use (jti replay cache): one per request, signed before timing starts. */
function exchangeBodies(subjectToken: string, clientKey: TestKey, tokenEndpoint: string): Promise<string[]> {
  return Promise.all(
    Array.from({ length: WARMUP + REQUESTS }, async () =>
      new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: subjectToken,
        subject_token_type: 'urn:ietf:params:oauth:token-type:id_token',
        audience: API,
        scope: 'read',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await assertion(clientKey, tokenEndpoint),
      }).toString(),
    ),
  );
}

const CLI = fileURLToPath(new URL('../../core/dist/cli/main.js', import.meta.url));

/**
 * `tessera serve --workers N` through the CLI, N = 1 then 2, on one Redis store (a fleet needs a shared
 * one). The same load as above, from this one process: on a machine with few cores the load generator
 * competes with the workers, so the ratio is a floor.
 */
async function workersScenario(config: Record<string, unknown>, clientKey: TestKey, subjectFor: (issuer: string) => Promise<string>): Promise<string[]> {
  const unavailable = redisUnavailableReason();
  if (unavailable) return [`workers: skipped, ${unavailable}`];
  const redis = await RedisServer.start();
  const phases: Phase[] = [];
  try {
    for (const workers of [1, 2]) {
      const dir = await mkdtemp(join(tmpdir(), 'tessera-bench-workers-'));
      const port = await new Promise<number>((done) => {
        const probe = createNetServer().listen(0, '127.0.0.1', () => {
          const { port: free } = probe.address() as { port: number };
          probe.close(() => done(free));
        });
      });
      const issuer = `http://127.0.0.1:${port}`;
      const path = join(dir, 'broker.json');
      await writeFile(path, JSON.stringify({ ...config, issuer, dataDir: dir, store: { kind: 'redis', url: redis.url, keyPrefix: `bench${workers}:` }, log: { level: 'warn' } }));
      // Audit records go to stdout, discarded here, as a collector would read them.
      const child = spawn(process.execPath, [CLI, 'serve', '--config', path, '--workers', String(workers)], { env: { ...process.env, PORT: String(port) }, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      const deadline = Date.now() + 60_000;
      while (!stderr.includes('tessera listening on')) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`serve --workers ${workers} did not start: ${stderr}`);
        await new Promise((done) => setTimeout(done, 50));
      }
      try {
        const tokenEndpoint = `${issuer}/token`;
        const subjectToken = await subjectFor(issuer);
        const bodies = await exchangeBodies(subjectToken, clientKey, tokenEndpoint);
        await load('warm-up', tokenEndpoint, bodies.slice(0, WARMUP));
        const phase = await load(`exchange, ${workers} worker${workers > 1 ? 's' : ''}`, tokenEndpoint, bodies.slice(WARMUP));
        if (phase.ok !== REQUESTS) throw new Error(`only ${phase.ok} of ${REQUESTS} exchanges succeeded with ${workers} workers`);
        phases.push(phase);
      } finally {
        const exited = new Promise((done) => child.once('exit', done));
        child.kill('SIGTERM');
        await exited;
      }
    }
  } finally {
    await redis.stop();
  }
  const [one, two] = phases as [Phase, Phase];
  return [
    ...phases.map(row),
    `ratio: 2 workers = ${(two.perSecond / one.perSecond).toFixed(2)}x 1 worker (tessera serve --workers, Redis store, ${availableParallelism()} cores shared with the load generator)`,
  ];
}

function row(phase: Phase): string {
  return `${phase.name.padEnd(20)} ${phase.perSecond.toFixed(0).padStart(8)}/s   p50 ${phase.p50.toFixed(2).padStart(7)} ms   p99 ${phase.p99.toFixed(2).padStart(7)} ms`;
}

async function main(): Promise<void> {
  const idp = await LoopbackIssuer.start();
  const clientKey = await generateTestKey('ES256');
  const dataDir = await mkdtemp(join(tmpdir(), 'tessera-bench-'));
  const config = {
    issuer: 'http://127.0.0.1:1',
    dataDir,
    keys: { generate: true },
    network: { allowLoopbackHttp: true },
    clients: [{ id: 'bench-client', auth: { method: 'private_key_jwt', jwks: { keys: [clientKey.publicJwk] } } }],
    plugins: [{ use: '@tessera/plugin-oidc', config: { issuers: [{ issuer: idp.issuer, jwksUri: idp.jwksUri }] } }, { use: '@tessera/plugin-access-token' }],
    policy: {
      rules: [
        // The client's own broker token, used as actor_token in the delegation phase.
        { id: 'self', match: { issuers: [idp.issuer], subjects: ['bench-client'] }, grant: { audiences: ['bench-client'], maxLifetimeSeconds: 3600, allowLifetimeBeyondSubject: true } },
        { id: 'bench', match: { issuers: [idp.issuer] }, grant: { audiences: [API], scopes: ['read'], maxLifetimeSeconds: 600 } },
        {
          id: 'bench-delegated',
          match: { issuers: [idp.issuer], actor: { trust: ['broker'], subjects: ['bench-client'] }, when: "subject.subject == 'alice' && request.chainDepth <= 2" },
          grant: { audiences: [API], scopes: ['read'], maxLifetimeSeconds: 600, delegation: { allowed: true }, claims: { copy: ['email'] } },
        },
      ],
    },
  };
  const broker = await startChild('broker', { BENCH_BROKER_CONFIG: JSON.stringify(config) });
  const koa = await startChild('koa');
  try {
    const subjectToken = await idp.mint({ sub: 'alice', aud: broker.url }, { expiresIn: 3600 });
    const tokenEndpoint = `${broker.url}/token`;
    const bodies = await exchangeBodies(subjectToken, clientKey, tokenEndpoint);
    await load('warm-up', tokenEndpoint, bodies.slice(0, WARMUP));
    await load('warm-up', `${koa.url}/token`, bodies.slice(0, WARMUP));
    const baseline = await load('empty Koa handler', `${koa.url}/token`, bodies.slice(WARMUP));
    const exchanges = await load('token exchange', tokenEndpoint, bodies.slice(WARMUP));
    if (exchanges.ok !== REQUESTS) throw new Error(`only ${exchanges.ok} of ${REQUESTS} exchanges succeeded`);

    // Delegation: the same subject, plus the client's own broker token as actor (a second verification,
    // the revocation check, chain building, a CEL condition and a mapped claim).
    const actorToken = await ownToken(tokenEndpoint, await idp.mint({ sub: 'bench-client', aud: broker.url }), await assertion(clientKey, tokenEndpoint));
    const delegationSubject = await idp.mint({ sub: 'alice', aud: broker.url, email: 'alice@example.test' }, { expiresIn: 3600 });
    const delegationBodies = await Promise.all(
      Array.from({ length: WARMUP + REQUESTS }, async () =>
        new URLSearchParams({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: delegationSubject,
          subject_token_type: 'urn:ietf:params:oauth:token-type:id_token',
          actor_token: actorToken,
          actor_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          audience: API,
          scope: 'read',
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: await assertion(clientKey, tokenEndpoint),
        }).toString(),
      ),
    );
    await load('warm-up', tokenEndpoint, delegationBodies.slice(0, WARMUP));
    const delegations = await load('delegated exchange', tokenEndpoint, delegationBodies.slice(WARMUP));
    if (delegations.ok !== REQUESTS) throw new Error(`only ${delegations.ok} of ${REQUESTS} delegated exchanges succeeded`);

    const fleet = await workersScenario(config, clientKey, (issuer) => idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 3600 }));
    process.stdout.write(
      [
        `tessera bench: ${REQUESTS} requests, concurrency ${CONCURRENCY}, loopback HTTP, node ${process.version}`,
        row(baseline),
        row(exchanges),
        row(delegations),
        `ratio: token exchange = ${((exchanges.perSecond / baseline.perSecond) * 100).toFixed(1)}% of the empty Koa handler`,
        `ratio: delegated exchange = ${((delegations.perSecond / baseline.perSecond) * 100).toFixed(1)}% of the empty Koa handler, ${((delegations.perSecond / exchanges.perSecond) * 100).toFixed(1)}% of a plain exchange`,
        '(each exchange: client assertion ES256 verify + jti replay check, ID token ES256 verify, policy, access token ES256 sign, audit;',
        ' a delegated one also verifies the actor token, checks revocation, builds act, evaluates a CEL condition)',
        ...fleet,
        '',
      ].join('\n'),
    );
  } finally {
    broker.child.kill();
    koa.child.kill();
    await idp.close();
  }
}

const serveIndex = process.argv.indexOf('--serve');
if (serveIndex > 0) {
  void serve(process.argv[serveIndex + 1]!);
} else {
  main().catch((error: unknown) => {
    process.stderr.write(`bench failed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
