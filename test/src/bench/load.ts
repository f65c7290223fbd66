/**
 * The load generator: vegeta (scripts/install-vegeta.sh), in a process of its own pinned to a core the
 * server does not use. Bodies are written to a targets file beforehand, so generating load costs no
 * crypto. Two modes: `peak` (a fixed number of workers, each sending as soon as its last answer came
 * back) and `rate` (a constant open-loop rate: latency measured from the scheduled send time, so a
 * stalled server cannot hide its queue, i.e. no coordinated omission).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnPinned, type BenchScenario } from './system.js';
import { CpuMeter } from './proc.js';

export const VEGETA = fileURLToPath(new URL('../../../.tools/vegeta/bin/vegeta', import.meta.url));
const INSTALL_VEGETA = fileURLToPath(new URL('../../../scripts/install-vegeta.sh', import.meta.url));

export type LoadMode = { readonly kind: 'peak'; readonly workers: number } | { readonly kind: 'rate'; readonly perSecond: number };

export interface Measured {
  readonly requests: number;
  readonly seconds: number;
  readonly perSecond: number;
  /** Milliseconds. */
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
  /** Answers other than 200 plus transport errors; a run with any is refused by the caller. */
  readonly errors: number;
  /** Every body was used before the duration ran out: the run was shorter than asked. */
  readonly exhausted: boolean;
  /** Share of one core the load generator used: near 100% means the generator, not the server, was the limit. */
  readonly generatorCpu: number;
  /** A sample of the status codes and first error, to say why a run failed. */
  readonly firstError?: string;
}

/** Builds vegeta when it is missing; returns why it cannot run otherwise. */
export async function ensureVegeta(log: (line: string) => void): Promise<string | undefined> {
  if (existsSync(VEGETA)) return undefined;
  log('bench: building the load generator (scripts/install-vegeta.sh)');
  const code = await new Promise<number | null>((done) => spawn('bash', [INSTALL_VEGETA], { stdio: ['ignore', 'inherit', 'inherit'] }).once('exit', done));
  return code === 0 && existsSync(VEGETA) ? undefined : `the load generator could not be built (scripts/install-vegeta.sh exited ${code})`;
}

interface VegetaResult {
  readonly code: number;
  readonly timestamp: string;
  /** Nanoseconds. */
  readonly latency: number;
  readonly error: string;
  readonly body?: string;
}

/**
 * Sends `bodies` (each once, in order) to `scenario.url` for `seconds`. vegeta stops early when the
 * bodies run out, which `exhausted` reports.
 */
export async function attack(scenario: BenchScenario, bodies: readonly string[], mode: LoadMode, seconds: number, options: { cpu: number | undefined; workDir: string }): Promise<Measured> {
  const targets = join(options.workDir, 'targets.jsonl');
  const output = join(options.workDir, 'results.bin');
  const header = Object.fromEntries(Object.entries(scenario.headers).map(([name, value]) => [name, [value]]));
  const url = scenario.url;
  await writeFile(targets, bodies.map((body) => JSON.stringify({ method: 'POST', url, header, body: Buffer.from(body).toString('base64') })).join('\n') + '\n');
  const args = ['attack', '-format=json', '-lazy', `-targets=${targets}`, `-duration=${seconds}s`, '-http2=false', '-redirects=-1', '-max-body=512', `-output=${output}`, '-timeout=30s'];
  if (mode.kind === 'peak') args.push('-rate=0', `-workers=${mode.workers}`, `-max-workers=${mode.workers}`);
  else args.push(`-rate=${Math.max(1, Math.round(mode.perSecond))}/s`, '-workers=8');
  // One OS thread of Go scheduling: the generator keeps to its core.
  const child = spawnPinned(options.cpu, VEGETA, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, GOMAXPROCS: '1' } });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const meter = new CpuMeter(child.pid!);
  const started = performance.now();
  const code = await new Promise<number | null>((done) => child.once('exit', done));
  const wall = (performance.now() - started) / 1000;
  const generatorCpu = meter.sharePerCore(wall);
  if (code !== 0) throw new Error(`vegeta attack exited ${code}: ${stderr.trim().split('\n').at(-1) ?? ''}`);
  const results = await decode(output);
  await rm(targets, { force: true });
  await rm(output, { force: true });
  return summarise(results, bodies.length, generatorCpu);
}

async function decode(output: string): Promise<VegetaResult[]> {
  const encoded = `${output}.jsonl`;
  const code = await new Promise<number | null>((done) => spawn(VEGETA, ['encode', '--to', 'json', `--output=${encoded}`, output], { stdio: 'ignore' }).once('exit', done));
  if (code !== 0) throw new Error(`vegeta encode exited ${code}`);
  const text = await readFile(encoded, 'utf8');
  await rm(encoded, { force: true });
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as VegetaResult);
}

/** What vegeta records when a lazy targets file ends before the duration: not a request. */
const NO_TARGETS = 'no targets to attack';

function summarise(all: readonly VegetaResult[], offered: number, generatorCpu: number): Measured {
  const results = all.filter((result) => result.error !== NO_TARGETS);
  if (results.length === 0) throw new Error('vegeta recorded no requests');
  const starts = results.map((result) => Date.parse(result.timestamp));
  const first = Math.min(...starts);
  // The span from the first send to the last answer.
  const last = Math.max(...results.map((result, index) => starts[index]! + result.latency / 1e6));
  const seconds = (last - first) / 1000;
  const latencies = results.map((result) => result.latency / 1e6).sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
  const failed = results.filter((result) => result.code !== 200);
  const sample = failed[0];
  return {
    requests: results.length,
    seconds,
    perSecond: results.length / seconds,
    p50: at(0.5),
    p99: at(0.99),
    p999: at(0.999),
    errors: failed.length,
    exhausted: results.length < all.length || results.length >= offered,
    generatorCpu,
    ...(sample ? { firstError: `${sample.error || sample.code}${sample.body ? `: ${Buffer.from(sample.body, 'base64').toString('utf8').slice(0, 300)}` : ''}` } : {}),
  };
}
