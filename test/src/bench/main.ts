/**
 * `npm run bench`: every system and scenario in one run on loopback, measured in interleaved rounds
 * (A B C … A B C …) by a load generator pinned to a core of its own (vegeta, see load.ts), each server
 * pinned to the other. Every figure is also a ratio to references measured in the same run: the empty
 * Koa handler and the crypto bound (references.ts). Peers (oidc-provider, Keycloak) run beside Tessera;
 * one that cannot run is recorded with the reason. Results: bench/results/latest.{json,md} plus a dated
 * copy of each run. Knobs: BENCH_SECONDS (per round, default 5), BENCH_ROUNDS (3), BENCH_CONCURRENCY
 * (16), BENCH_PEERS (`oidc-provider,keycloak`; empty for none), BENCH_ONLY (scenario name filter).
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LoopbackIssuer, generateTestKey } from '@tessera/plugin-testkit';
import { attack, ensureVegeta, type Measured } from './load.js';
import { cpuSeconds, processTree, rssMiB } from './proc.js';
import { cryptoBound, measureCryptoRates, startKoa, type CryptoRates } from './references.js';
import { canPin, isUnavailable, type BenchScenario, type BenchSystem, type StartSystem } from './system.js';
import { coldStart, startTessera, type TesseraBenchDeps } from './tessera.js';
import { startTesseraSpire } from './tessera-spire.js';
import { workersScaling, type Scaling } from './workers.js';
import { startOidcProvider } from './peers/oidc-provider.js';
import { startKeycloak } from './peers/keycloak.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const WARMUP_SECONDS = 2;
const PEERS = (process.env.BENCH_PEERS ?? 'oidc-provider,keycloak').split(',').filter(Boolean);
const ONLY = process.env.BENCH_ONLY;

/** What each scenario must do in crypto at the least: ES256 verifies and signs per request. */
const CRYPTO_WORK: Readonly<Record<string, { verifies: number; signs: number; what: string }>> = {
  'tessera: cold exchange': { verifies: 2, signs: 1, what: 'client assertion + subject token verified, access token signed' },
  'tessera: warm exchange': { verifies: 1, signs: 1, what: 'client assertion verified (the subject token was verified before), access token signed' },
  'tessera: delegated exchange': { verifies: 1, signs: 1, what: 'client assertion verified (subject and actor were verified before), access token signed' },
  'tessera: client_credentials': { verifies: 1, signs: 1, what: 'client assertion verified, access token signed' },
};
/** Rows measured a second time at half their peak rate, for latency under a load the server keeps up with. */
const HALF_PEAK = ['tessera: cold exchange', 'tessera: warm exchange', 'tessera: client_credentials'];

interface Row {
  readonly system: string;
  readonly scenario: string;
  readonly rounds: readonly Measured[];
  readonly median: Measured;
  /** Server CPU seconds per request, ms. */
  readonly cpuMsPerRequest: number;
  /** Server RSS after the last round, MiB. */
  readonly rssMiB: number;
  readonly comparable?: string;
}

const log = (line: string) => process.stderr.write(`${line}\n`);

function median(values: readonly Measured[]): Measured {
  return [...values].sort((a, b) => a.perSecond - b.perSecond)[Math.floor(values.length / 2)]!;
}

interface Entry {
  readonly system: BenchSystem;
  readonly scenario: BenchScenario;
  /** Rate measured by the calibration run: sizes every later body set. */
  rate: number;
  readonly rounds: Measured[];
  cpuSeconds: number;
  requests: number;
}

class Bench {
  readonly workRoot: string;
  readonly serverCpu: number | undefined;
  readonly generatorCpu: number | undefined;

  constructor(workRoot: string) {
    this.workRoot = workRoot;
    const pin = canPin(availableParallelism());
    this.serverCpu = pin ? 0 : undefined;
    this.generatorCpu = pin ? 1 : undefined;
  }

  async dir(name: string): Promise<string> {
    return mkdtemp(join(this.workRoot, `${name.replace(/[^a-z0-9]+/gi, '-')}-`));
  }

  /** Bodies enough for `seconds` at `rate`, with room to spare: running out shortens a run. */
  static bodyCount(rate: number, seconds: number): number {
    return Math.ceil(rate * seconds * 1.6) + 500;
  }

  /** Every server but the one measured, paused (SIGSTOP): an idle JVM's compiler threads must not share its core. */
  others: readonly BenchSystem[] = [];

  async run(entry: Entry, seconds: number, mode: Parameters<typeof attack>[2], allowShort = false): Promise<{ measured: Measured; cpu: number }> {
    const paused = this.others.filter((system) => system !== entry.system).flatMap((system) => processTree(system.pid));
    signal(paused, 'SIGSTOP');
    try {
      return await this.#run(entry, seconds, mode, allowShort);
    } finally {
      signal(paused, 'SIGCONT');
    }
  }

  async #run(entry: Entry, seconds: number, mode: Parameters<typeof attack>[2], allowShort: boolean): Promise<{ measured: Measured; cpu: number }> {
    const expected = mode.kind === 'rate' ? mode.perSecond : entry.rate;
    const bodies = await entry.scenario.bodies(Bench.bodyCount(expected, seconds));
    const workDir = await this.dir('load');
    const before = cpuSeconds(entry.system.pid);
    const measured = await attack(entry.scenario, bodies, mode, seconds, { cpu: this.generatorCpu, workDir });
    const cpu = cpuSeconds(entry.system.pid) - before;
    await rm(workDir, { recursive: true, force: true });
    if (measured.errors > 0) throw new Error(`${entry.scenario.name}: ${measured.errors} of ${measured.requests} requests failed (first: ${measured.firstError})`);
    if (!allowShort && measured.exhausted && measured.seconds < seconds / 2) throw new Error(`${entry.scenario.name}: ran out of bodies after ${measured.seconds.toFixed(1)} s`);
    return { measured, cpu };
  }

  /** A short run with a fixed number of bodies gives the rate every later run is sized by; then the warm-up. */
  async calibrate(entry: Entry): Promise<void> {
    // A fixed number of bodies, so the unknown rate cannot run them out: the probe ends when they do.
    entry.rate = 1500 / (WARMUP_SECONDS * 1.6);
    const { measured } = await this.run(entry, WARMUP_SECONDS, { kind: 'peak', workers: CONCURRENCY }, true);
    entry.rate = measured.perSecond;
    const warmup = Math.max(WARMUP_SECONDS, entry.scenario.warmupSeconds ?? 0);
    const { measured: warm } = await this.run(entry, warmup, { kind: 'peak', workers: CONCURRENCY });
    entry.rate = Math.max(entry.rate, warm.perSecond);
    log(`bench: ${entry.scenario.name}: warm, ~${entry.rate.toFixed(0)}/s`);
  }
}

async function startAll(bench: Bench, deps: TesseraBenchDeps, tesseraVersion: string): Promise<{ systems: BenchSystem[]; unavailable: Record<string, string> }> {
  const systems: BenchSystem[] = [];
  const unavailable: Record<string, string> = {};
  const starters: [string, StartSystem][] = [
    ['koa', startKoa],
    ['tessera', (options) => startTessera(options, deps, tesseraVersion)],
    ['tessera + SPIRE', (options) => startTesseraSpire(options, deps, tesseraVersion)],
    ...(PEERS.includes('oidc-provider') ? [['oidc-provider', startOidcProvider] as [string, StartSystem]] : []),
    ...(PEERS.includes('keycloak') ? [['keycloak', startKeycloak] as [string, StartSystem]] : []),
  ];
  for (const [name, start] of starters) {
    log(`bench: starting ${name}`);
    const started = await start({ cpu: bench.serverCpu, workDir: await bench.dir(name), log });
    if (isUnavailable(started)) {
      unavailable[name] = started.unavailable;
      log(`bench: ${name} not measured: ${started.unavailable}`);
    } else systems.push(started);
  }
  return { systems, unavailable };
}

function signal(pids: readonly number[], name: 'SIGSTOP' | 'SIGCONT'): void {
  for (const pid of pids) {
    try {
      process.kill(pid, name);
    } catch {
      // gone meanwhile
    }
  }
}

function fmt(measured: Measured): string {
  return `${measured.perSecond.toFixed(0).padStart(7)}/s  p50 ${measured.p50.toFixed(2).padStart(6)}  p99 ${measured.p99.toFixed(2).padStart(6)}  p99.9 ${measured.p999.toFixed(2).padStart(7)} ms`;
}

async function main(): Promise<void> {
  const missing = await ensureVegeta(log);
  if (missing) throw new Error(missing);
  const workRoot = await mkdtemp(join(tmpdir(), 'tessera-bench-'));
  const bench = new Bench(workRoot);
  const [idp, clientKey] = await Promise.all([LoopbackIssuer.start(), generateTestKey('ES256')]);
  const deps: TesseraBenchDeps = { idp, clientKey };
  const { version: coreVersion } = JSON.parse(await readFile(fileURLToPath(new URL('../../../core/package.json', import.meta.url)), 'utf8')) as { version: string };
  const tesseraVersion = `tessera ${coreVersion}, node ${process.version}, default heap`;
  const crypto: CryptoRates = await measureCryptoRates(bench.serverCpu);
  const { systems, unavailable } = await startAll(bench, deps, tesseraVersion);
  bench.others = systems;
  try {
    const entries: Entry[] = systems.flatMap((system) =>
      system.scenarios.filter((scenario) => !ONLY || scenario.name.includes(ONLY) || system.name === 'koa').map((scenario) => ({ system, scenario, rate: 0, rounds: [], cpuSeconds: 0, requests: 0 })),
    );
    // A scenario that cannot be measured (its requests fail) is recorded with the reason; the rest run.
    for (const entry of [...entries]) {
      try {
        await bench.calibrate(entry);
      } catch (error) {
        unavailable[entry.scenario.name] = error instanceof Error ? error.message : String(error);
        entries.splice(entries.indexOf(entry), 1);
        log(`bench: ${entry.scenario.name} not measured: ${unavailable[entry.scenario.name]}`);
      }
    }
    for (let round = 1; round <= ROUNDS; round++) {
      for (const entry of entries) {
        const { measured, cpu } = await bench.run(entry, SECONDS, { kind: 'peak', workers: CONCURRENCY });
        entry.rounds.push(measured);
        entry.cpuSeconds += cpu;
        entry.requests += measured.requests;
        log(`bench: round ${round}/${ROUNDS} ${entry.scenario.name.padEnd(40)} ${fmt(measured)}  (generator ${(measured.generatorCpu * 100).toFixed(0)}% of a core)`);
      }
    }
    const rows: Row[] = entries.map((entry) => ({
      system: entry.system.name,
      scenario: entry.scenario.name,
      rounds: entry.rounds,
      median: median(entry.rounds),
      cpuMsPerRequest: (entry.cpuSeconds / entry.requests) * 1000,
      rssMiB: rssMiB(entry.system.pid),
      ...(entry.scenario.comparable ? { comparable: entry.scenario.comparable } : {}),
    }));
    const halfPeak: Record<string, Measured> = {};
    for (const entry of entries.filter((candidate) => HALF_PEAK.includes(candidate.scenario.name) || (candidate.scenario.comparable && candidate.system.name !== 'tessera'))) {
      const peak = median(entry.rounds).perSecond;
      const { measured } = await bench.run(entry, SECONDS, { kind: 'rate', perSecond: peak / 2 });
      halfPeak[entry.scenario.name] = measured;
      log(`bench: half of peak ${entry.scenario.name.padEnd(36)} ${fmt(measured)}`);
    }
    // Processes of their own: every system above is paused meanwhile.
    const paused = systems.flatMap((system) => processTree(system.pid));
    signal(paused, 'SIGSTOP');
    let cold: number[] = [];
    let scaling: Scaling | undefined;
    try {
      cold = ONLY ? [] : await coldStarts(bench, deps);
      scaling = ONLY ? undefined : await workersScaling(deps, SECONDS, CONCURRENCY, log);
    } finally {
      signal(paused, 'SIGCONT');
    }
    await report({ crypto, rows, halfPeak, cold, scaling, unavailable, systems, bench });
  } finally {
    for (const system of systems) await system.stop().catch((error: unknown) => log(`bench: stopping ${system.name}: ${String(error)}`));
    await idp.close();
    await rm(workRoot, { recursive: true, force: true });
  }
}

async function coldStarts(bench: Bench, deps: TesseraBenchDeps): Promise<number[]> {
  const runs: number[] = [];
  for (let run = 0; run < 3; run++) runs.push(await coldStart({ cpu: bench.serverCpu, workDir: await bench.dir('cold-start'), log }, deps));
  return runs;
}

/** The peer rows a Tessera row is compared with: the same grant, and a cold row with cold ones only. */
function peersOf(row: Row, rows: readonly Row[]): Row[] {
  if (row.system !== 'tessera' || !row.comparable) return [];
  const cold = row.scenario.includes('cold');
  return rows.filter((other) => other.system !== 'tessera' && other.comparable === row.comparable && other.scenario.includes('cold') === cold);
}

/** Peers Tessera is to beat on the comparable grant, by how much (issue targets). */
const PEER_TARGETS: Readonly<Record<string, number>> = { keycloak: 5, 'oidc-provider': 2 };

/** Each target the harness can check, with what this run measured: `met` or `MISSED`, never left out. */
function targets({ crypto, rows, halfPeak, cold, scaling, koa }: Pick<Report, 'crypto' | 'rows' | 'halfPeak' | 'cold' | 'scaling'> & { koa: number }): string[] {
  const lines = ['targets:'];
  const check = (what: string, measured: string, met: boolean | undefined) => lines.push(`- ${met === undefined ? 'not measured' : met ? 'met' : 'MISSED'}: ${what}: ${measured}`);
  const row = (scenario: string) => rows.find((candidate) => candidate.scenario === scenario);
  const coldRow = row('tessera: cold exchange');
  const coldWork = CRYPTO_WORK['tessera: cold exchange']!;
  const coldBound = cryptoBound(crypto, coldWork.verifies, coldWork.signs).node;
  check('cold exchange >= 70% of the crypto bound', coldRow ? `${coldRow.median.perSecond.toFixed(0)}/s of ${coldBound.toFixed(0)}/s = ${((coldRow.median.perSecond / coldBound) * 100).toFixed(0)}%` : '-', coldRow && coldRow.median.perSecond >= 0.7 * coldBound);
  const warmRow = row('tessera: warm exchange');
  check('warm exchange >= 60% of the Koa ceiling', warmRow ? `${warmRow.median.perSecond.toFixed(0)}/s of ${koa.toFixed(0)}/s = ${((warmRow.median.perSecond / koa) * 100).toFixed(0)}%` : '-', warmRow && warmRow.median.perSecond >= 0.6 * koa);
  for (const tessera of rows.filter((candidate) => candidate.system === 'tessera')) {
    for (const peer of peersOf(tessera, rows)) {
      const factor = PEER_TARGETS[peer.system];
      if (factor === undefined) continue;
      const ratio = tessera.median.perSecond / peer.median.perSecond;
      check(`${tessera.scenario} >= ${factor}x ${peer.scenario}`, `${ratio.toFixed(2)}x`, ratio >= factor);
    }
  }
  for (const [scenario, measured] of Object.entries(halfPeak).filter(([scenario]) => scenario.startsWith('tessera'))) {
    check(`p99 < 5 ms at half of peak, ${scenario}`, `${measured.p99.toFixed(2)} ms`, measured.p99 < 5);
  }
  const rss = Math.max(0, ...rows.filter((candidate) => candidate.system.startsWith('tessera')).map((candidate) => candidate.rssMiB));
  check('steady RSS < 150 MB per Tessera process (default heap)', `${rss.toFixed(0)} MiB at most`, rss > 0 ? rss * 2 ** 20 < 150e6 : undefined);
  const coldStartMs = [...cold].sort((a, b) => a - b)[Math.floor(cold.length / 2)];
  check('cold start < 1 s (median)', coldStartMs === undefined ? '-' : `${coldStartMs.toFixed(0)} ms`, coldStartMs === undefined ? undefined : coldStartMs < 1000);
  const spare = availableParallelism() >= 3;
  check(`2 workers >= 1.8x one worker${spare ? '' : ' (no core is left for the load generator here)'}`, scaling?.ratio === undefined ? (scaling?.skipped ?? '-') : `${scaling.ratio.toFixed(2)}x`, scaling?.ratio === undefined ? undefined : scaling.ratio >= 1.8);
  return lines;
}

interface Report {
  readonly crypto: CryptoRates;
  readonly rows: readonly Row[];
  readonly halfPeak: Readonly<Record<string, Measured>>;
  readonly cold: readonly number[];
  readonly scaling: Scaling | undefined;
  readonly unavailable: Readonly<Record<string, string>>;
  readonly systems: readonly BenchSystem[];
  readonly bench: Bench;
}

async function report({ crypto, rows, halfPeak, cold, scaling, unavailable, systems, bench }: Report): Promise<void> {
  const koa = rows.find((row) => row.system === 'koa')!.median.perSecond;
  const percent = (part: number, whole: number) => `${((part / whole) * 100).toFixed(0)}%`;
  const lines: string[] = [];
  const pinning = bench.serverCpu === undefined ? 'not pinned (taskset missing or one core)' : `servers on core ${bench.serverCpu}, load generator on core ${bench.generatorCpu}`;
  lines.push(`${ROUNDS} interleaved rounds of ${SECONDS} s (median shown), ${CONCURRENCY} connections, vegeta on loopback, ${pinning}`);
  lines.push(`machine: ${availableParallelism()} cores, ${cpus()[0]?.model ?? 'unknown cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ${process.platform} ${process.arch}`);
  lines.push('');
  lines.push('| scenario | req/s | p50 ms | p99 ms | p99.9 ms | CPU ms/req | RSS MiB | vs Koa | vs crypto bound | vs peer |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const row of rows) {
    const work = CRYPTO_WORK[row.scenario];
    const bound = work ? cryptoBound(crypto, work.verifies, work.signs).node : undefined;
    const versus = peersOf(row, rows).map((peer) => `${(row.median.perSecond / peer.median.perSecond).toFixed(1)}x ${peer.system}`).join(', ');
    lines.push(
      `| ${row.scenario} | ${row.median.perSecond.toFixed(0)} | ${row.median.p50.toFixed(2)} | ${row.median.p99.toFixed(2)} | ${row.median.p999.toFixed(2)} | ${row.cpuMsPerRequest.toFixed(3)} | ${row.rssMiB.toFixed(0)} | ${percent(row.median.perSecond, koa)} | ${bound ? percent(row.median.perSecond, bound) : ''} | ${versus} |`,
    );
  }
  lines.push('');
  lines.push(`crypto, one core: ES256 sign ${crypto.nodeSign.toFixed(0)}/s, verify ${crypto.nodeVerify.toFixed(0)}/s (node:crypto); sign ${crypto.webSign.toFixed(0)}/s, verify ${crypto.webVerify.toFixed(0)}/s (WebCrypto)`);
  for (const [scenario, work] of Object.entries(CRYPTO_WORK)) {
    const bound = cryptoBound(crypto, work.verifies, work.signs);
    lines.push(`crypto bound, ${scenario}: ${bound.node.toFixed(0)}/s (${work.what})`);
  }
  if (Object.keys(halfPeak).length > 0) {
    lines.push('');
    lines.push('| at half of peak (open loop) | req/s | p50 ms | p99 ms | p99.9 ms |');
    lines.push('|---|---:|---:|---:|---:|');
    for (const [scenario, measured] of Object.entries(halfPeak)) lines.push(`| ${scenario} | ${measured.perSecond.toFixed(0)} | ${measured.p50.toFixed(2)} | ${measured.p99.toFixed(2)} | ${measured.p999.toFixed(2)} |`);
  }
  lines.push('');
  if (cold.length > 0) lines.push(`cold start (process start to first successful exchange): ${[...cold].sort((a, b) => a - b).map((ms) => `${ms.toFixed(0)} ms`).join(', ')}`);
  if (scaling) lines.push(...scaling.lines);
  for (const [what, reason] of Object.entries(unavailable)) lines.push(`${what}: not measured: ${reason}`);
  lines.push('');
  lines.push(...targets({ crypto, rows, halfPeak, cold, scaling, koa }));
  lines.push(`systems: ${systems.map((system) => system.version).join('; ')}`);
  process.stdout.write(`${lines.join('\n')}\n`);
  const date = new Date().toISOString();
  await writeResults(date, {
    date,
    machine: { node: process.version, cpus: availableParallelism(), cpuModel: cpus()[0]?.model ?? 'unknown', memoryGiB: totalmem() / 2 ** 30, platform: `${process.platform} ${process.arch}` },
    settings: { seconds: SECONDS, rounds: ROUNDS, concurrency: CONCURRENCY, warmupSeconds: WARMUP_SECONDS, serverCpu: bench.serverCpu ?? null, generatorCpu: bench.generatorCpu ?? null, generator: 'vegeta v12.13.0' },
    systems: systems.map((system) => ({ name: system.name, version: system.version })),
    unavailable,
    references: { koa, crypto },
    rows,
    halfPeak,
    coldStartMs: cold,
    scaling: scaling ?? null,
  }, lines);
}

/** bench/results/latest.json and latest.md, and a dated copy so earlier runs stay comparable. */
async function writeResults(date: string, result: Record<string, unknown>, lines: readonly string[]): Promise<void> {
  const dir = fileURLToPath(new URL('../../../bench/results/', import.meta.url));
  await mkdir(dir, { recursive: true });
  const json = `${JSON.stringify(result, null, 2)}\n`;
  const markdown = `# Tessera bench, ${date}\n\n${lines.join('\n')}\n`;
  const stamp = date.replaceAll(':', '-');
  await writeFile(join(dir, 'latest.json'), json);
  await writeFile(join(dir, 'latest.md'), markdown);
  await writeFile(join(dir, `${stamp}.json`), json);
  await writeFile(join(dir, `${stamp}.md`), markdown);
  process.stdout.write(`results: ${join(dir, 'latest.md')}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
