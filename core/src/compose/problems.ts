import { ConfigError, type ConfigPath, type Locator } from '../config/errors.js';

/**
 * Runs one check of a plan: a `ConfigError` adds its problems to `problems` and the plan goes on (every
 * problem is reported at once); anything else is a fault and is thrown.
 */
export async function collectProblems<T>(problems: string[], step: () => T | Promise<T>): Promise<T | undefined> {
  try {
    return await step();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    problems.push(...error.problems);
    return undefined;
  }
}

/** A problem already placed: `file:line: …` (the locator's form) or `file: …`. */
const LOCATED = /^[^\s:]+(?::\d+)?: /;
/** The config path a problem starts with: `endpoints.introspection.clients[0]: …`. */
const LEADING_PATH = /^([A-Za-z_$][\w$-]*(?:\.[A-Za-z_$][\w$-]*|\[\d+\])*)(?=[:\s])/;

/**
 * Prefixes each problem that names a config path with the `file:line` that wrote it (the longest part of
 * the path the files contain), so every check's message is located the same way, whoever raised it.
 */
export function locateProblems(problems: readonly string[], locate: Locator | undefined): string[] {
  if (!locate) return [...problems];
  return problems.map((problem) => {
    const path = LEADING_PATH.exec(problem)?.[1];
    if (!path || (LOCATED.test(problem) && !problem.startsWith(`${path}: `))) return problem;
    const keys = parsePath(path);
    for (let length = keys.length; length > 0; length--) {
      const where = locate(keys.slice(0, length));
      if (where) return `${where}: ${problem}`;
    }
    return problem;
  });
}

/** `plugins[1].config.issuers` → `['plugins', 1, 'config', 'issuers']`. */
function parsePath(text: string): ConfigPath {
  const keys: PropertyKey[] = [];
  for (const match of text.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) keys.push(match[2] !== undefined ? Number(match[2]) : match[1]!);
  return keys;
}
