/**
 * Scaling with cores: `tessera serve --workers N`, N = 1 then 2, on one Redis store (a fleet needs a
 * shared one), same load. Nothing is pinned here: two workers need both cores, so the load generator
 * competes with them and the ratio is a floor on what a machine with a spare core would show.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { attack, type Measured } from './load.js';
import { redisUnavailableReason, RedisServer } from '../redis-server.js';
import { API, benchConfig, serveCli, stopChild, TesseraBodies, type TesseraBenchDeps } from './tessera.js';

export interface Scaling {
  readonly one?: Measured;
  readonly two?: Measured;
  readonly ratio?: number;
  readonly skipped?: string;
  readonly lines: readonly string[];
}

export async function workersScaling(deps: TesseraBenchDeps, seconds: number, connections: number, log: (line: string) => void): Promise<Scaling> {
  const unavailable = redisUnavailableReason();
  if (unavailable) return { skipped: unavailable, lines: [`workers: not measured: ${unavailable}`] };
  const redis = await RedisServer.start();
  const measured: Measured[] = [];
  try {
    for (const workers of [1, 2]) {
      const workDir = await mkdtemp(join(tmpdir(), 'tessera-bench-workers-'));
      const config = (issuer: string) => benchConfig(issuer, deps, workDir, { store: { kind: 'redis', url: redis.url, keyPrefix: `bench${workers}:` }, audit: { destination: { file: join(workDir, 'audit-{worker}.jsonl') } } });
      const { child, issuer } = await serveCli(config, { cpu: undefined, workDir, log, args: ['--workers', String(workers)] });
      try {
        const bodies = new TesseraBodies(issuer, deps);
        const scenario = { name: `tessera: cold exchange, ${workers} worker${workers > 1 ? 's' : ''}`, url: bodies.tokenEndpoint, headers: { 'content-type': 'application/x-www-form-urlencoded' }, bodies: async () => [] };
        const make = (count: number) => Array.from({ length: count }, () => bodies.exchange(bodies.subjectToken(), API));
        await attack(scenario, make(3000), { kind: 'peak', workers: connections }, 30, { cpu: undefined, workDir });
        const run = await attack(scenario, make(Math.ceil(2500 * workers * seconds)), { kind: 'peak', workers: connections }, seconds, { cpu: undefined, workDir });
        if (run.errors > 0) throw new Error(`${scenario.name}: ${run.errors} requests failed (first: ${run.firstError})`);
        log(`bench: ${scenario.name}: ${run.perSecond.toFixed(0)}/s`);
        measured.push(run);
      } finally {
        await stopChild(child);
        await rm(workDir, { recursive: true, force: true });
      }
    }
  } finally {
    await redis.stop();
  }
  const [one, two] = measured as [Measured, Measured];
  const ratio = two.perSecond / one.perSecond;
  return {
    one,
    two,
    ratio,
    lines: [
      `workers (cold exchange, Redis store, nothing pinned): 1 worker ${one.perSecond.toFixed(0)}/s, 2 workers ${two.perSecond.toFixed(0)}/s = ${ratio.toFixed(2)}x;`,
      `  ${availableParallelism()} cores shared by the workers and the load generator, so this is a floor`,
    ],
  };
}
