import { inspectConfig } from '../compose/inspect.js';
import type { Unchecked } from '../compose/scope.js';
import { ConfigError } from './errors.js';
import type { LoadedConfig } from './load.js';

/**
 * Everything `serve` would refuse the config for, found by planning it the way `serve` does (plugins
 * started with purpose `check`, nothing written or dialled). Throws `ConfigError` with every problem;
 * otherwise returns what only the network could tell, for `config validate` to name as unchecked.
 */
export async function checkConfig(loaded: Pick<LoadedConfig, 'config' | 'baseDir' | 'locate'>): Promise<readonly Unchecked[]> {
  const inspection = await inspectConfig(loaded);
  await inspection.close();
  if (inspection.problems.length > 0) throw new ConfigError(inspection.problems);
  return inspection.unchecked;
}
