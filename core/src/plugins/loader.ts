import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { resolve as resolveImport } from 'import-meta-resolve';
import semver from 'semver';
import type { DependencyContainer } from 'tsyringe';
import { isPluginDefinition, PLUGIN_API_VERSION, SDK_VERSION, tokens, type PluginDefinition, type PluginProvides, type PluginPurpose } from '@tessera/plugin-sdk';
import { ConfigError, describeIssues, type Locator } from '../config/errors.js';
import type { BrokerConfig } from '../config/schema.js';

const SDK_PACKAGE = '@tessera/plugin-sdk';

export interface PluginEntryResult {
  /** The config's `use:` value. */
  readonly use: string;
  /** Its place in the config's `plugins` list. */
  readonly index: number;
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

/** Where a `use:` value was found, or why it could not be loaded: each cause gets its own message. */
type ImportOutcome =
  | { readonly ok: true; readonly exported: unknown }
  | { readonly ok: false; readonly problem: string };

let coreSdk: string | null | undefined;

/** The SDK this core was built against (resolved once): a plugin resolving another copy would get tokens the broker never registered. */
function coreSdkFile(): string | undefined {
  if (coreSdk === undefined) {
    try {
      coreSdk = realpathSync(fileURLToPath(import.meta.resolve(SDK_PACKAGE)));
    } catch {
      coreSdk = null;
    }
  }
  return coreSdk ?? undefined;
}

/** A config `use:` value: a path relative to the config file, or a package installed beside the config or with the broker. */
async function importPlugin(use: string, baseDir: string): Promise<ImportOutcome> {
  const isPath = use.startsWith('.') || isAbsolute(use);
  let file: string;
  if (isPath) {
    // Not checked on disk first: a loader hook (tsx, vitest) may map `./plugin.js` to its source.
    file = resolve(baseDir, use);
  } else {
    const found = locatePackage(use, baseDir);
    if (!found.ok) return found;
    file = found.file;
  }
  // Before importing: a plugin bound to another SDK copy would fail in confusing ways, or not at all.
  const sdk = sdkProblem(use, file);
  if (sdk) return { ok: false, problem: sdk };
  let module: { default?: unknown };
  try {
    module = (await import(pathToFileURL(file).href)) as { default?: unknown };
  } catch (error) {
    const missing = (error as { code?: string }).code === 'ERR_MODULE_NOT_FOUND' && firstLine(error).includes(file);
    if (isPath && missing) return { ok: false, problem: `plugin file "${use}" does not exist (looked for ${file})` };
    // The plugin itself is there; something it imports is not, or its top level threw.
    return { ok: false, problem: `importing plugin "${use}" threw: ${firstLine(error)}` };
  }
  return { ok: true, exported: module.default };
}

/** Where `import(specifier)` from a module in `dir` would load it (ESM rules: `import` conditions, no NODE_PATH). */
function importedFrom(specifier: string, dir: string): string {
  return fileURLToPath(resolveImport(specifier, pathToFileURL(join(dir, 'noop.js')).href));
}

/** Beside the config first (an operator's own install), then where the broker itself is installed. */
function locatePackage(use: string, baseDir: string): { ok: true; file: string } | { ok: false; problem: string } {
  const brokerDir = dirname(fileURLToPath(import.meta.url));
  let unexported = false;
  for (const dir of [baseDir, brokerDir]) {
    try {
      return { ok: true, file: importedFrom(use, dir) };
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === 'ERR_PACKAGE_PATH_NOT_EXPORTED' || code === 'ERR_UNSUPPORTED_DIR_IMPORT') unexported = true;
    }
  }
  if (unexported) return { ok: false, problem: `package "${use}" is installed but its package.json "exports" give no entry point the broker can import` };
  return {
    ok: false,
    problem: `plugin package "${use}" is not installed (searched node_modules upward from ${baseDir} and from ${brokerDir}); install it beside the config or with the broker: npm install ${use}`,
  };
}

function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n', 1)[0]!.slice(0, 300);
}

/** The nearest package.json above a module file (named or not: a plain plugins directory's has no name). */
function nearestManifest(file: string): { peerDependencies?: Record<string, string>; dependencies?: Record<string, string> } | undefined {
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      try {
        return JSON.parse(readFileSync(manifest, 'utf8')) as { peerDependencies?: Record<string, string>; dependencies?: Record<string, string> };
      } catch {
        return undefined;
      }
    }
    if (dirname(dir) === dir) return undefined;
  }
}

/**
 * A plugin must share the broker's SDK: its tokens are symbols and its errors are matched with
 * `instanceof`, so a second copy hands the plugin tokens the broker never registered. Named here, before
 * `init`, instead of surfacing as a DI error or a "plugin fault". The copy compared is the one the
 * plugin's own `import` would load.
 */
function sdkProblem(use: string, file: string): string | undefined {
  const manifest = nearestManifest(file);
  const declared = manifest?.peerDependencies?.[SDK_PACKAGE] ?? manifest?.dependencies?.[SDK_PACKAGE];
  if (declared !== undefined && semver.validRange(declared) && !semver.satisfies(SDK_VERSION, declared, { includePrerelease: true })) {
    return `plugin "${use}" needs ${SDK_PACKAGE} ${declared}, the broker has ${SDK_VERSION}`;
  }
  let theirs: string;
  try {
    theirs = realpathSync(importedFrom(SDK_PACKAGE, dirname(file)));
  } catch {
    return undefined; // the SDK is not reachable from the plugin: it does not import it
  }
  const core = coreSdkFile();
  if (core && theirs !== core) {
    return `plugin "${use}" loads a second copy of ${SDK_PACKAGE} (${dirname(theirs)}; the broker's is ${dirname(core)}): make the SDK a peerDependency of the plugin and reinstall, or run npm dedupe`;
  }
  return undefined;
}

/** Why a default export is not a plugin, in terms a plugin author can act on. */
function shapeProblem(use: string, exported: unknown): string {
  if (exported === undefined) return `"${use}" has no default export (export default definePlugin({...}))`;
  return `the default export of "${use}" is ${typeof exported === 'function' ? 'a function' : typeof exported}, not the result of definePlugin() from ${SDK_PACKAGE}`;
}

/** A plugin entry whose problems are known, in config order; `index` is its place in `plugins`. */
export interface PluginResolution {
  readonly results: PluginEntryResult[];
  readonly problems: string[];
}

/**
 * Resolves every configured plugin, checks its SDK and API range against this core, and parses its config
 * block with its own schema. Every problem is collected (`config validate` reports them in one go); the
 * entries that resolved are returned alongside.
 */
export async function resolvePluginEntries(entries: BrokerConfig['plugins'], baseDir: string, locate?: Locator): Promise<PluginResolution> {
  const problems: string[] = [];
  const results: PluginEntryResult[] = [];
  const where = (path: PropertyKey[]) => {
    const at = locate?.(path);
    return at ? `${at}: ` : '';
  };
  for (const [index, entry] of entries.entries()) {
    const at = `${where(['plugins', index, 'use'])}plugins[${index}].use: `;
    const imported = await importPlugin(entry.use, baseDir);
    if (!imported.ok) {
      problems.push(at + imported.problem);
      continue;
    }
    const definition = imported.exported;
    if (!isPluginDefinition(definition)) {
      problems.push(at + shapeProblem(entry.use, definition));
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
    results.push({ use: entry.use, index, definition, config: parsed.data });
  }
  const names = results.map((result) => result.definition.name);
  const repeated = names.find((name, index) => names.indexOf(name) !== index);
  if (repeated) problems.push(`plugins: plugin "${repeated}" is listed twice`);
  return { results, problems };
}

/** `resolvePluginEntries`, refusing with every problem when any entry fails. */
export async function resolvePlugins(entries: BrokerConfig['plugins'], baseDir: string, locate?: Locator): Promise<PluginEntryResult[]> {
  const { results, problems } = await resolvePluginEntries(entries, baseDir, locate);
  if (problems.length > 0) throw new ConfigError(problems);
  return results;
}

/** The services the SDK documents for plugins; the container also holds core-only ones (the config...). */
const PLUGIN_SERVICES: ReadonlySet<symbol> = new Set(Object.values(tokens));

/**
 * Resolves each plugin's declared deps from the broker's container and runs its init. Each plugin's
 * `close` is handed to `onClose` as soon as its init succeeds, so a later failure can still release it.
 * A plugin that fails does not stop the others (every problem is reported at once); each problem names
 * the plugin and its place in `plugins`.
 */
export async function initPlugins(
  resolved: readonly PluginEntryResult[],
  container: DependencyContainer,
  onClose: (close: () => void | Promise<void>) => void,
  configDir: string,
  purpose: PluginPurpose = 'serve',
): Promise<{ plugins: LoadedPlugin[]; problems: string[] }> {
  const plugins: LoadedPlugin[] = [];
  const problems: string[] = [];
  for (const { use, index, definition, config } of resolved) {
    const at = `plugins[${index}]: plugin "${definition.name}"`;
    const deps: Record<string, unknown> = {};
    let missing = false;
    for (const [key, dep] of Object.entries(definition.deps)) {
      // A core token (its symbol is reachable through @tessera/core) would hand a plugin the whole config,
      // client secret hashes included: only the SDK's plugin services are resolved.
      if (!PLUGIN_SERVICES.has(dep)) {
        problems.push(`${at}: deps.${key} asks for ${dep.description ?? 'an unnamed token'}, which is not a plugin service (use the SDK's tokens)`);
        missing = true;
      } else if (!container.isRegistered(dep, true)) {
        problems.push(`${at}: deps.${key} is not a service the broker provides`);
        missing = true;
      } else {
        deps[key] = container.resolve(dep);
      }
    }
    if (missing) continue;
    let provides: PluginProvides;
    try {
      provides = await definition.init({ config, deps, configDir, purpose });
    } catch (error) {
      if (error instanceof ConfigError) problems.push(...error.problems.map((problem) => `${at}: ${problem}`));
      // Plugins often prefix their own name already; say it once.
      else problems.push(`${at} failed to start: ${firstLine(error).replace(`plugin ${definition.name}: `, '')}`);
      continue;
    }
    const release = provides.close;
    if (release) {
      onClose(async () => {
        try {
          await release();
        } catch (error) {
          throw new Error(`plugin "${definition.name}" failed to close: ${firstLine(error)}`);
        }
      });
    }
    plugins.push({ name: definition.name, version: definition.version, use, apiVersion: definition.apiVersion, provides });
  }
  return { plugins, problems };
}
