// The wall-clock backstop for conditions that iterate, bind, or call what the cost model does not know.

import vm from 'node:vm';

/**
 * Runs `evaluate` so that a wall-clock timeout terminates it. vm's timeout arms a watchdog thread that calls
 * V8's TerminateExecution, which stops whatever JS runs on this isolate, including cel-js code from the main
 * context and a backtracking regex, not only code compiled inside the vm context. The context is only a
 * vehicle: the script's sole statement calls back out. Costs a thread start per call (60 µs or more), hence only
 * for conditions that iterate or bind (see `estimateCost`): a backstop, their cost being bounded already.
 */
export function underWatchdog(evaluate: () => unknown, timeoutMs: number): unknown {
  watchdog ??= createWatchdog();
  watchdog.pending = evaluate;
  try {
    return watchdog.script.runInContext(watchdog.context, { timeout: timeoutMs });
  } finally {
    watchdog.pending = undefined;
  }
}

interface Watchdog {
  readonly context: vm.Context;
  readonly script: vm.Script;
  pending: (() => unknown) | undefined;
}

let watchdog: Watchdog | undefined;

function createWatchdog(): Watchdog {
  const state: Watchdog = { context: vm.createContext(Object.create(null)), script: new vm.Script('run()', { filename: 'tessera:policy-condition' }), pending: undefined };
  state.context.run = () => state.pending?.();
  return state;
}

// Duck-typed: Node builds this error from its own Error, not necessarily the caller's (vitest is one example).
export function isTimeout(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === 'ERR_SCRIPT_EXECUTION_TIMEOUT';
}
