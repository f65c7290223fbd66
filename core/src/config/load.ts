import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { isNode, LineCounter, parseDocument } from 'yaml';
import { brokerConfigSchema, type BrokerConfig } from './schema.js';
import { ConfigError, describeIssues, formatPath, type ConfigPath, type Locator } from './errors.js';

export interface LoadedConfig {
  readonly config: BrokerConfig;
  /** Directory relative paths in the config (dataDir, key files, local plugins) are resolved against. */
  readonly baseDir: string;
  readonly locate: Locator;
}

export type Environment = Readonly<Record<string, string | undefined>>;

/** Reads, substitutes and validates a YAML config file. Throws `ConfigError` naming every problem. */
export async function loadConfigFile(path: string, env: Environment = process.env): Promise<LoadedConfig> {
  const absolute = resolve(path);
  let text: string;
  try {
    text = await readFile(absolute, 'utf8');
  } catch {
    throw new ConfigError([`${path}: cannot read the config file`]);
  }
  return parseConfigText(text, { file: path, baseDir: dirname(absolute), env });
}

export function parseConfigText(text: string, options: { file: string; baseDir: string; env?: Environment }): LoadedConfig {
  const lineCounter = new LineCounter();
  const document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (document.errors.length > 0) {
    throw new ConfigError(
      document.errors.map((error) => `${options.file}:${lineCounter.linePos(error.pos[0]).line}: ${error.message.split('\n')[0]}`),
    );
  }
  const locate: Locator = (path) => {
    for (let depth = path.length; depth >= 0; depth--) {
      const node = document.getIn(path.slice(0, depth) as unknown[], true);
      if (isNode(node) && node.range) return `${options.file}:${lineCounter.linePos(node.range[0]).line}`;
    }
    return options.file;
  };
  return { config: validateConfig(document.toJS(), { env: options.env, locate }), baseDir: options.baseDir, locate };
}

/** Validates an already-parsed config object (tests build configs in code). */
export function validateConfig(raw: unknown, options: { env?: Environment; locate?: Locator } = {}): BrokerConfig {
  const problems: string[] = [];
  const substituted = substituteEnvironment(raw ?? {}, options.env ?? process.env, [], problems, options.locate);
  if (problems.length > 0) throw new ConfigError(problems);
  const parsed = brokerConfigSchema.safeParse(substituted);
  if (!parsed.success) throw new ConfigError(describeIssues(parsed.error.issues, [], options.locate));
  return parsed.data;
}

const REFERENCE = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/**
 * `${NAME}` and `${NAME:-default}` inside string values, after YAML parsing (so a value can never inject
 * YAML structure). `$${` stays a literal `${`.
 */
function substituteEnvironment(value: unknown, env: Environment, path: ConfigPath, problems: string[], locate?: Locator): unknown {
  if (typeof value === 'string') {
    return value.replace(REFERENCE, (match, name: string | undefined, fallback: string | undefined) => {
      if (name === undefined) return '${';
      const found = env[name];
      if (found !== undefined && found !== '') return found;
      if (fallback !== undefined) return fallback;
      const where = locate?.(path);
      problems.push(`${where ? `${where}: ` : ''}${formatPath(path)}: environment variable ${name} is not set`);
      return match;
    });
  }
  if (Array.isArray(value)) return value.map((item, index) => substituteEnvironment(item, env, [...path, index], problems, locate));
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(
      Object.entries(value).map(([key, item]) => [key, substituteEnvironment(item, env, [...path, key], problems, locate)]),
    );
  }
  return value;
}
