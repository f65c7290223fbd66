import { createRequire } from 'node:module';
import { isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import semver from 'semver';
import type { DependencyContainer } from 'tsyringe';
import { isPluginDefinition, PLUGIN_API_VERSION, tokens, type PluginDefinition, type PluginProvides } from '@tessera/plugin-sdk';
import { ConfigError, describeIssues, type Locator } from '../config/errors.js';
import type { BrokerConfig } from '../config/schema.js';

export interface PluginEntryResult {
  /** The config's `use:` value. */
  readonly use: string;
  readonly definition: PluginDefinition;
  readonly config: unknown;
}

export interface LoadedPlugin {
  readonly name: string;
  readonly version: string;
  readonly use: string;
  /** The core plugin API range the plugin declared. */
  readonly apiVersion: string;
  readonly provides: PluginProvides;
}

/** A config `use:` value: a package name, or a path relative to the config file. */
async function importPlugin(use: string, baseDir: string): Promise<unknown> {
  const isPath = use.startsWith('.') || isAbsolute(use);
  let specifier: string;
  if (isPath) {
    specifier = pathToFileURL(resolve(baseDir, use)).href;
  } else {
    // Packages installed beside the config win; otherwise those installed with Tessera itself.
    try {
      specifier = pathToFileURL(createRequire(join(baseDir, 'noop.js')).resolve(use)).href;
    } catch {
      specifier = use;
    }
  }
  return ((await import(specifier)) as { default?: unknown }).default;
}

/**
 * Resolves every configured plugin, checks its API range against this core, and parses its config block
 * with its own schema. All problems are collected so `config validate` reports them in one go.
 */
export async function resolvePlugins(entries: BrokerConfig['plugins'], baseDir: string, locate?: Locator): Promise<PluginEntryResult[]> {
  const problems: string[] = [];
  const results: PluginEntryResult[] = [];
  const where = (path: PropertyKey[]) => {
    const at = locate?.(path);
    return at ? `${at}: ` : '';
  };
  for (const [index, entry] of entries.entries()) {
    let definition: unknown;
    try {
      definition = await importPlugin(entry.use, baseDir);
    } catch {
      problems.push(`${where(['plugins', index, 'use'])}plugins[${index}].use: cannot load plugin "${entry.use}"`);
      continue;
    }
    if (!isPluginDefinition(definition)) {
      problems.push(`${where(['plugins', index, 'use'])}plugins[${index}].use: "${entry.use}" has no definePlugin() default export`);
      continue;
    }
    if (!semver.validRange(definition.apiVersion) || !semver.satisfies(PLUGIN_API_VERSION, definition.apiVersion)) {
      problems.push(
        `${where(['plugins', index, 'use'])}plugins[${index}]: plugin "${definition.name}" needs core plugin API ${definition.apiVersion}, this core provides ${PLUGIN_API_VERSION}`,
      );
      continue;
    }
    const parsed = definition.config.safeParse(entry.config ?? {});
    if (!parsed.success) {
      problems.push(...describeIssues(parsed.error.issues, ['plugins', index, 'config'], locate).map((line) => `${line} (plugin ${definition.name})`));
      continue;
    }
    results.push({ use: entry.use, definition, config: parsed.data });
  }
  const names = results.map((result) => result.definition.name);
  const repeated = names.find((name, index) => names.indexOf(name) !== index);
  if (repeated) problems.push(`plugins: plugin "${repeated}" is listed twice`);
  if (problems.length > 0) throw new ConfigError(problems);
  return results;
}

/** The services the SDK documents for plugins; the container also holds core-only ones (the config...). */
const PLUGIN_SERVICES: ReadonlySet<symbol> = new Set(Object.values(tokens));

/**
 * Resolves each plugin's declared deps from the broker's container and runs its init. Each plugin's
 * `close` is handed to `onClose` as soon as its init succeeds, so a later failure can still release it.
 */
export async function initPlugins(
  resolved: readonly PluginEntryResult[],
  container: DependencyContainer,
  onClose: (close: () => void | Promise<void>) => void,
  configDir: string,
): Promise<LoadedPlugin[]> {
  const loaded: LoadedPlugin[] = [];
  for (const { use, definition, config } of resolved) {
    const deps: Record<string, unknown> = {};
    for (const [key, dep] of Object.entries(definition.deps)) {
      // A core token (its symbol is reachable through @tessera/core) would hand a plugin the whole config,
      // client secret hashes included: only the SDK's plugin services are resolved.
      if (!PLUGIN_SERVICES.has(dep)) {
        throw new ConfigError([`plugin ${definition.name}: deps.${key} asks for ${dep.description ?? 'an unnamed token'}, which is not a plugin service (use the SDK's tokens)`]);
      }
      if (!container.isRegistered(dep, true)) throw new ConfigError([`plugin ${definition.name}: deps.${key} is not a service the broker provides`]);
      deps[key] = container.resolve(dep);
    }
    const provides = await definition.init({ config, deps, configDir });
    if (provides.close) onClose(provides.close);
    loaded.push({ name: definition.name, version: definition.version, use, apiVersion: definition.apiVersion, provides });
  }
  return loaded;
}
