/**
 * `npm run bench`: token exchanges per second over loopback HTTP, against two references measured in the
 * same run on the same machine: an empty Koa handler (the HTTP ceiling) and the crypto bound (what one
 * core's ES256 signs and verifies allow, if they were the only cost). Each server runs in its own child
 * process; this process only generates load (pre-signed tokens, fixed concurrency, keep-alive). Systems
 * are measured in interleaved rounds (A B C A B C …) and each reports its median round, so drift on a
 * shared machine touches them all alike. Results go to bench/results/ (latest.json, latest.md, and a
 * dated copy of each run).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Agent, request } from 'node:http';
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { createServer as createNetServer } from 'node:net';
import { availableParallelism, cpus, tmpdir } from 'node:os';
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
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const API = 'https://api.example.test';

interface Phase {
  readonly name: string;
  readonly perSecond: number;
  readonly p50: number;
  readonly p99: number;
  readonly ok: number;
}

/** ES256 sign and verify operations per second on one core, through node:crypto and through WebCrypto (jose's path). */
async function measureCrypto(): Promise<void> {
  const { generateKeyPairSync, sign, verify, webcrypto } = await import('node:crypto');
  const data = Buffer.from('eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImF1ZCI6Imh0dHBzOi8vYXBpLmV4YW1wbGUudGVzdCJ9');
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const rate = async (op: () => unknown): Promise<number> => {
    for (let i = 0; i < 200; i++) await op();
    let count = 0;
    const started = performance.now();
    while (performance.now() - started < 1000) {
      await op();
      count++;
    }
    return count / ((performance.now() - started) / 1000);
  };
  const signature = sign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' });
  const subtle = webcrypto.subtle;
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const webPrivate = await subtle.importKey('jwk', privateKey.export({ format: 'jwk' }), algorithm, false, ['sign']);
  const webPublic = await subtle.importKey('jwk', publicKey.export({ format: 'jwk' }), algorithm, false, ['verify']);
  const result = {
    nodeSign: await rate(() => sign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' })),
    nodeVerify: await rate(() => verify('sha256', data, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature)),
    webSign: await rate(() => subtle.sign(algorithm, webPrivate, data)),
    webVerify: await rate(() => subtle.verify(algorithm, webPublic, signature, data)),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

interface CryptoRates {
  readonly nodeSign: number;
  readonly nodeVerify: number;
  readonly webSign: number;
  readonly webVerify: number;
}

/** Exchanges per second one core could do if `verifies` ES256 verifies and `signs` signs were the only cost. */
function cryptoBound(rates: CryptoRates, verifies: number, signs: number): { node: number; webCrypto: number } {
  return { node: 1 / (verifies / rates.nodeVerify + signs / rates.nodeSign), webCrypto: 1 / (verifies / rates.webVerify + signs / rates.webSign) };
}

async function serve(kind: string): Promise<void> {
  if (kind === 'crypto') return measureCrypto();
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
    // The crypto reference, in a process of its own like the broker: one core's ES256 throughput.
    const cryptoChild = spawn(process.execPath, [fileURLToPath(import.meta.url), '--serve', 'crypto'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const rates = JSON.parse(await new Promise<string>((done) => createInterface({ input: cryptoChild.stdout! }).once('line', done))) as CryptoRates;

    const subjectToken = await idp.mint({ sub: 'alice', aud: broker.url }, { expiresIn: 3600 });
    const tokenEndpoint = `${broker.url}/token`;
    // Client assertions are single-use (jti replay cache): every round gets bodies of its own, signed now.
    const exchangeRounds = await roundsOf(() => exchangeBodies(subjectToken, clientKey, tokenEndpoint));

    // Delegation: the same subject, plus the client's own broker token as actor (a second verification,
    // the revocation check, chain building, a CEL condition and a mapped claim).
    const actorToken = await ownToken(tokenEndpoint, await idp.mint({ sub: 'bench-client', aud: broker.url }), await assertion(clientKey, tokenEndpoint));
    const delegationSubject = await idp.mint({ sub: 'alice', aud: broker.url, email: 'alice@example.test' }, { expiresIn: 3600 });
    const delegationRounds = await roundsOf(() =>
      Promise.all(
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
      ),
    );
    const systems: readonly BenchSystem[] = [
      { name: 'empty Koa handler', url: `${koa.url}/token`, rounds: exchangeRounds, mustSucceed: false },
      { name: 'token exchange', url: tokenEndpoint, rounds: exchangeRounds, mustSucceed: true },
      { name: 'delegated exchange', url: tokenEndpoint, rounds: delegationRounds, mustSucceed: true },
    ];
    const [baseline, exchanges, delegations] = (await interleaved(systems)) as [Phase, Phase, Phase];
    // One exchange verifies the client assertion and the ID token and signs the access token; a delegated
    // one also verifies the actor token.
    const plainBound = cryptoBound(rates, 2, 1);
    const delegatedBound = cryptoBound(rates, 3, 1);

    const fleet = await workersScenario(config, clientKey, (issuer) => idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 3600 }));
    const percent = (part: number, whole: number) => `${((part / whole) * 100).toFixed(1)}%`;
    const lines = [
      `tessera bench: ${REQUESTS} requests per round, ${ROUNDS} interleaved rounds (median shown), concurrency ${CONCURRENCY}, loopback HTTP, node ${process.version}`,
      row(baseline),
      row(exchanges),
      row(delegations),
      `crypto, one core: ES256 sign ${rates.nodeSign.toFixed(0)}/s, verify ${rates.nodeVerify.toFixed(0)}/s (node:crypto); sign ${rates.webSign.toFixed(0)}/s, verify ${rates.webVerify.toFixed(0)}/s (WebCrypto, what jose calls)`,
      `crypto bound: exchange ${plainBound.node.toFixed(0)}/s (node:crypto) or ${plainBound.webCrypto.toFixed(0)}/s (WebCrypto); delegated ${delegatedBound.node.toFixed(0)}/s or ${delegatedBound.webCrypto.toFixed(0)}/s`,
      `ratio: token exchange = ${percent(exchanges.perSecond, baseline.perSecond)} of the empty Koa handler, ${percent(exchanges.perSecond, plainBound.node)} of the crypto bound (node:crypto), ${percent(exchanges.perSecond, plainBound.webCrypto)} of the WebCrypto bound`,
      `ratio: delegated exchange = ${percent(delegations.perSecond, baseline.perSecond)} of the empty Koa handler, ${percent(delegations.perSecond, delegatedBound.node)} of its crypto bound (node:crypto), ${percent(delegations.perSecond, exchanges.perSecond)} of a plain exchange`,
      '(each exchange: client assertion ES256 verify + jti replay check, ID token ES256 verify, policy, access token ES256 sign, audit;',
      ' a delegated one also verifies the actor token, checks revocation, builds act, evaluates a CEL condition)',
      ...fleet,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    await writeResults({
      date: new Date().toISOString(),
      machine: { node: process.version, cpus: availableParallelism(), cpuModel: cpus()[0]?.model ?? 'unknown', platform: `${process.platform} ${process.arch}` },
      settings: { requests: REQUESTS, rounds: ROUNDS, concurrency: CONCURRENCY, warmup: WARMUP },
      references: { koa: baseline, crypto: rates, cryptoBound: { exchange: plainBound, delegated: delegatedBound } },
      results: [exchanges, delegations],
      ratios: {
        exchangeToKoa: exchanges.perSecond / baseline.perSecond,
        exchangeToCryptoBound: exchanges.perSecond / plainBound.node,
        delegatedToKoa: delegations.perSecond / baseline.perSecond,
        delegatedToCryptoBound: delegations.perSecond / delegatedBound.node,
      },
      fleet,
      table: lines,
    });
  } finally {
    broker.child.kill();
    koa.child.kill();
    await idp.close();
  }
}

interface BenchSystem {
  readonly name: string;
  readonly url: string;
  /** Bodies per round, each preceded by its warm-up share: `WARMUP + REQUESTS` apiece. */
  readonly rounds: readonly (readonly string[])[];
  /** Every request must be answered 200 (the Koa reference answers anything). */
  readonly mustSucceed: boolean;
}

/** `ROUNDS` sets of bodies from `make`, made before any timing starts. */
async function roundsOf(make: () => Promise<string[]>): Promise<string[][]> {
  const rounds: string[][] = [];
  for (let round = 0; round < ROUNDS; round++) rounds.push(await make());
  return rounds;
}

/** Each system once per round, in the same order every round; a system's result is its median round. */
async function interleaved(systems: readonly BenchSystem[]): Promise<Phase[]> {
  const measured: Phase[][] = systems.map(() => []);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [index, system] of systems.entries()) {
      const bodies = system.rounds[round]!;
      await load('warm-up', system.url, bodies.slice(0, WARMUP) as string[]);
      const phase = await load(system.name, system.url, bodies.slice(WARMUP) as string[]);
      if (system.mustSucceed && phase.ok !== REQUESTS) throw new Error(`${system.name}: only ${phase.ok} of ${REQUESTS} succeeded in round ${round + 1}`);
      measured[index]!.push(phase);
    }
  }
  return measured.map((phases) => [...phases].sort((a, b) => a.perSecond - b.perSecond)[Math.floor(phases.length / 2)]!);
}

/** bench/results/latest.json and latest.md, and a dated copy so earlier runs stay comparable. */
async function writeResults(result: { date: string; table: readonly string[] } & Record<string, unknown>): Promise<void> {
  const dir = fileURLToPath(new URL('../../bench/results/', import.meta.url));
  await mkdir(dir, { recursive: true });
  const json = `${JSON.stringify(result, null, 2)}\n`;
  const markdown = `# Tessera bench, ${result.date}\n\n\`\`\`\n${result.table.join('\n')}\n\`\`\`\n`;
  await writeFile(join(dir, 'latest.json'), json);
  await writeFile(join(dir, 'latest.md'), markdown);
  await writeFile(join(dir, `${result.date.replaceAll(':', '-')}.json`), json);
  process.stdout.write(`results: ${join(dir, 'latest.json')}\n`);
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
