import type { Clock } from '@tessera/plugin-sdk';
import { silentLogger } from '../logging.js';
import { planGeneration, planKeySchedule, type ConfigSource, type GenerationPlan } from './plan.js';
import { collectProblems, locateProblems } from './problems.js';
import { inertProcessScope, type Unchecked } from './scope.js';

/** A config planned as `serve` would plan it, without serving, writing or connecting anything. */
export interface Inspection {
  /** Present when the config has no problem: the plan `serve` would run, on inert process services. */
  readonly plan?: GenerationPlan;
  /** Every problem `serve` would refuse the config for, each located at `file:line` where known. */
  readonly problems: readonly string[];
  /** What only the network could tell (a Redis server, a Workload API, issuers' keys). */
  readonly unchecked: readonly Unchecked[];
  close(): Promise<void>;
}

/**
 * The read-only commands' way into a config (`config validate`, `plugins list`, `policy explain`): the
 * same plan `serve` runs (`planGeneration`), over an inert process scope. No key is generated, no audit
 * file created, no socket dialled: plugins are started with purpose `check`.
 */
export async function inspectConfig(source: ConfigSource, options: { clock?: Clock } = {}): Promise<Inspection> {
  const { config, baseDir, locate } = source;
  const { scope, problems, unchecked } = await inertProcessScope(config, { baseDir, ...(options.clock ? { clock: options.clock } : {}) });
  let plan: GenerationPlan | undefined;
  try {
    plan = await collectProblems(problems, () => planGeneration(source, scope.container, { purpose: 'check' }));
    // A generated development key is created at startup; configured key files are read as serve reads them.
    if (config.keys.files.length > 0 || !config.keys.generate) {
      await collectProblems(problems, () => planKeySchedule(config, scope.keyRing, { baseDir, log: silentLogger, generate: false }));
    }
  } catch (error) {
    // A fault, not a config problem: release what was started before reporting it.
    await plan?.close().catch(() => undefined);
    await scope.close().catch(() => undefined);
    throw error;
  }
  const located = inFileOrder(locateProblems(problems, locate));
  if (located.length > 0 && plan) {
    const failed = plan;
    plan = undefined;
    await failed.close().catch(() => undefined);
  }
  return {
    ...(plan ? { plan } : {}),
    problems: located,
    unchecked,
    close: async () => {
      try {
        await plan?.close();
      } finally {
        await scope.close();
      }
    },
  };
}

/** Problems sorted by file, then line (unlocated ones last, in the order found), as an editor lists them. */
function inFileOrder(problems: readonly string[]): string[] {
  const at = (problem: string) => /^(.+?):(\d+): /.exec(problem);
  return problems
    .map((problem, index) => ({ problem, index, where: at(problem) }))
    .sort((a, b) => {
      if (!a.where || !b.where) return a.where ? -1 : b.where ? 1 : a.index - b.index;
      return a.where[1]! < b.where[1]! ? -1 : a.where[1]! > b.where[1]! ? 1 : Number(a.where[2]) - Number(b.where[2]) || a.index - b.index;
    })
    .map(({ problem }) => problem);
}
