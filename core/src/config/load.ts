import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { dirname, extname, join, resolve } from 'node:path';
import { isNode, LineCounter, parseDocument } from 'yaml';
import { brokerConfigSchema, type BrokerConfig } from './schema.js';
import { ConfigError, describeIssues, formatPath, type ConfigPath, type Locator } from './errors.js';
import { mergeLayers, type ConfigLayer } from './merge.js';

export interface LoadedConfig {
  readonly config: BrokerConfig;
  /** Directory relative paths in the config (dataDir, key files, local plugins) are resolved against: the first file's. */
  readonly baseDir: string;
  readonly locate: Locator;
  /** Config files read, in merge order. */
  readonly files: readonly string[];
  /** The merged config as written: references substituted, no schema defaults. */
  readonly written: Readonly<Record<string, unknown>>;
  /** Paths whose value came from a `${file:}` reference. Operators use those for secrets, so printing redacts them. */
  readonly substitutedFromFiles: readonly ConfigPath[];
}

export type Environment = Readonly<Record<string, string | undefined>>;

/** What a directory contributes. Hidden files are skipped: editors and Kubernetes ConfigMaps (`..data`) leave them there. */
const CONFIG_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

/** A config file as the operator named it (`shown`, used in messages) and where it is. */
interface ConfigFile {
  readonly shown: string;
  readonly absolute: string;
}

/** Cap on a `${file:}` reference: it holds a secret or a hash, never a document. */
export const FILE_REFERENCE_MAX_BYTES = 64 * 1024;

/** One parsed file: enough to locate a path inside it and to know which of its values came from files. */
interface ConfigSource {
  readonly file: string;
  readonly locate: Locator;
  readonly substitutedFromFiles: ReadonlySet<string>;
}

/** Reads, substitutes and validates one YAML config file (or directory): `loadConfigFiles([path])`. */
export async function loadConfigFile(path: string, env: Environment = process.env): Promise<LoadedConfig> {
  return loadConfigFiles([path], env);
}

/**
 * Reads config files and directories, substitutes references in each, merges them in order (see
 * `mergeLayers`) and validates the result. Throws `ConfigError` naming every problem, each with the
 * `file:line` that supplied the value.
 */
export async function loadConfigFiles(paths: readonly string[], env: Environment = process.env): Promise<LoadedConfig> {
  const expanded = await Promise.all(paths.map(expandConfigPath));
  // Problems are gathered in argument order, not in the order the reads finish.
  const problems = expanded.flatMap((entry) => ('problem' in entry ? [entry.problem] : []));
  const files = expanded.flatMap((entry) => ('files' in entry ? entry.files : []));
  if (files.length === 0 && problems.length === 0) {
    problems.push(paths.length === 0 ? 'no config file given' : `${paths.join(', ')}: no *.yaml, *.yml or *.json config file`);
  }
  const texts = await Promise.all(files.map((file) => readFile(file.absolute, 'utf8').catch(() => undefined)));
  const layers: ConfigLayer<ConfigSource>[] = [];
  files.forEach((file, index) => {
    const text = texts[index];
    if (text === undefined) return void problems.push(`${file.shown}: cannot read the config file`);
    const layer = parseLayer(text, { file: file.shown, dir: dirname(file.absolute), env }, problems);
    if (layer) layers.push(layer);
  });
  if (problems.length > 0) throw new ConfigError(problems);
  return composeLayers(layers as [ConfigLayer<ConfigSource>, ...ConfigLayer<ConfigSource>[]], dirname(files[0]!.absolute));
}

/** A file is itself; a directory is its config files, by name in byte order (not locale order, which varies). */
async function expandConfigPath(path: string): Promise<{ files: ConfigFile[] } | { problem: string }> {
  const absolute = resolve(path);
  try {
    if (!(await stat(absolute)).isDirectory()) return { files: [{ shown: path, absolute }] };
  } catch {
    return { problem: `${path}: cannot read the config file` };
  }
  let names: string[];
  try {
    names = await readdir(absolute);
  } catch {
    return { problem: `${path}: cannot read the config directory` };
  }
  const candidates = names
    .filter((name) => !name.startsWith('.') && CONFIG_EXTENSIONS.has(extname(name)))
    .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const found = await Promise.all(
    candidates.map(async (name) => {
      // Follows symlinks (Kubernetes mounts are links); a subdirectory named *.yaml is not a file.
      const isFile = await stat(join(absolute, name)).then((entry) => entry.isFile(), () => true);
      return isFile ? [{ shown: join(path, name), absolute: join(absolute, name) }] : [];
    }),
  );
  return { files: found.flat() };
}

/** Parses, substitutes and validates config text as one file. */
export function parseConfigText(text: string, options: { file: string; baseDir: string; env?: Environment }): LoadedConfig {
  const problems: string[] = [];
  const layer = parseLayer(text, { file: options.file, dir: options.baseDir, env: options.env ?? process.env }, problems);
  if (!layer) throw new ConfigError(problems);
  return composeLayers([layer], options.baseDir);
}

/** Validates an already-parsed config object (tests build configs in code). `${file:}` paths resolve against the working directory. */
export function validateConfig(raw: unknown, options: { env?: Environment; locate?: Locator } = {}): BrokerConfig {
  const problems: string[] = [];
  const substituted = substituteReferences(raw ?? {}, [], { env: options.env ?? process.env, dir: process.cwd(), locate: options.locate, problems, fromFiles: new Set() });
  if (problems.length > 0) throw new ConfigError(problems);
  return parseSchema(substituted, options.locate);
}

function parseSchema(value: unknown, locate?: Locator): BrokerConfig {
  const parsed = brokerConfigSchema.safeParse(value);
  if (!parsed.success) throw new ConfigError(describeIssues(parsed.error.issues, [], locate));
  return parsed.data;
}

/** One file's YAML, with its own references substituted, so every value's origin is still known. Problems go to `problems`. */
function parseLayer(
  text: string,
  options: { file: string; dir: string; env: Environment },
  problems: string[],
): ConfigLayer<ConfigSource> | undefined {
  const lineCounter = new LineCounter();
  const document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (document.errors.length > 0) {
    problems.push(...document.errors.map((error) => `${options.file}:${lineCounter.linePos(error.pos[0]).line}: ${error.message.split('\n')[0]}`));
    return undefined;
  }
  const locate: Locator = (path) => {
    for (let depth = path.length; depth >= 0; depth--) {
      const node = document.getIn(path.slice(0, depth) as unknown[], true);
      if (isNode(node) && node.range) return `${options.file}:${lineCounter.linePos(node.range[0]).line}`;
    }
    return options.file;
  };
  const fromFiles = new Set<string>();
  const before = problems.length;
  const value = substituteReferences(document.toJS(), [], { env: options.env, dir: options.dir, locate, problems, fromFiles });
  if (problems.length > before) return undefined;
  return { value, source: { file: options.file, locate, substitutedFromFiles: fromFiles } };
}

function composeLayers(layers: readonly [ConfigLayer<ConfigSource>, ...ConfigLayer<ConfigSource>[]], baseDir: string): LoadedConfig {
  const merged = mergeLayers(layers);
  const locate: Locator = (path) => {
    const origin = merged.originOf(path);
    return origin.source.locate(origin.path);
  };
  const config = parseSchema(merged.value, locate);
  const substitutedFromFiles: ConfigPath[] = [];
  const collect = (value: unknown, path: ConfigPath): void => {
    if (typeof value === 'string') {
      const origin = merged.originOf(path);
      if (origin.source.substitutedFromFiles.has(pathKey(origin.path))) substitutedFromFiles.push(path);
    } else if (Array.isArray(value)) {
      value.forEach((item, index) => collect(item, [...path, index]));
    } else if (typeof value === 'object' && value !== null) {
      for (const [key, item] of Object.entries(value)) collect(item, [...path, key]);
    }
  };
  collect(merged.value, []);
  return {
    config,
    baseDir,
    locate,
    files: layers.map((layer) => layer.source.file),
    // The schema accepted it, so the root is a mapping.
    written: merged.value as Record<string, unknown>,
    substitutedFromFiles,
  };
}

const pathKey = (path: ConfigPath): string => JSON.stringify(path);

/**
 * `$${` first so it always wins; `${file:...}` before `${NAME}`, which would otherwise claim `file`.
 * `${file:-x}` stays what it always meant: variable `file`, default `x`.
 */
const REFERENCE = /\$\$\{|\$\{file:(?!-)([^}]*)\}|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

interface SubstitutionContext {
  readonly env: Environment;
  /** Directory a relative `${file:}` path resolves against: that of the file holding the reference. */
  readonly dir: string;
  readonly locate?: Locator | undefined;
  readonly problems: string[];
  /** Receives the path key of every value that used a `${file:}` reference. */
  readonly fromFiles: Set<string>;
}

/**
 * `${NAME}`, `${NAME:-default}` and `${file:PATH}` inside string values, after YAML parsing (so a value can
 * never inject YAML structure). One pass: a substituted value is never scanned again. `$${` stays a literal `${`.
 */
function substituteReferences(value: unknown, path: ConfigPath, context: SubstitutionContext): unknown {
  if (typeof value === 'string') {
    const problem = (message: string) => {
      const where = context.locate?.(path);
      context.problems.push(`${where ? `${where}: ` : ''}${formatPath(path)}: ${message}`);
    };
    return value.replace(REFERENCE, (match, filePath: string | undefined, name: string | undefined, fallback: string | undefined) => {
      if (filePath !== undefined) {
        context.fromFiles.add(pathKey(path));
        const read = readReferencedFile(filePath, context.dir);
        if ('problem' in read) problem(`${match}: ${read.problem}`);
        return 'content' in read ? read.content : match;
      }
      if (name === undefined) return '${';
      const found = context.env[name];
      if (found !== undefined && found !== '') return found;
      if (fallback !== undefined) return fallback;
      problem(`environment variable ${name} is not set`);
      return match;
    });
  }
  if (Array.isArray(value)) return value.map((item, index) => substituteReferences(item, [...path, index], context));
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, substituteReferences(item, [...path, key], context)]));
  }
  return value;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Reads at most one byte past the cap, so a huge file or a device (`/dev/zero`) cannot exhaust memory.
 * Synchronous because `parseConfigText` is. Problems name the path, never the content.
 */
function readReferencedFile(path: string, dir: string): { content: string } | { problem: string } {
  if (path === '') return { problem: 'needs a path' };
  if (path.includes('${')) return { problem: 'references cannot be nested' };
  const absolute = resolve(dir, path);
  const buffer = Buffer.alloc(FILE_REFERENCE_MAX_BYTES + 1);
  let length = 0;
  try {
    // Non-blocking open, then a regular-file check: a FIFO or device would otherwise hang or stream forever.
    const fd = openSync(absolute, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      if (!fstatSync(fd).isFile()) return { problem: `${absolute} is not a regular file` };
      while (length < buffer.length) {
        const read = readSync(fd, buffer, length, buffer.length - length, null);
        if (read === 0) break;
        length += read;
      }
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    const code = (error as { code?: string }).code;
    return { problem: `cannot read ${absolute}${code ? ` (${code})` : ''}` };
  }
  if (length > FILE_REFERENCE_MAX_BYTES) return { problem: `${absolute} is larger than 64 KiB` };
  try {
    return { content: utf8.decode(buffer.subarray(0, length)).replace(/\r?\n$/, '') };
  } catch {
    return { problem: `${absolute} is not UTF-8 text` };
  }
}
