import type { z } from 'zod';
import type { AttributeExtractor, ClientAssertionVerifier, SubjectValidator, TokenIssuer } from './contracts.js';
import type { Token, TokenValue } from './tokens.js';

/** Deps a plugin asks for: its own names mapped to SDK tokens. */
export type PluginDeps = Readonly<Record<string, Token<unknown>>>;

export type ResolvedDeps<D extends PluginDeps> = { readonly [K in keyof D]: TokenValue<D[K]> };

/** What a plugin contributes once initialised. */
export interface PluginProvides {
  readonly validators?: readonly SubjectValidator[];
  readonly issuers?: readonly TokenIssuer[];
  readonly attributeExtractors?: readonly AttributeExtractor[];
  readonly clientAssertionVerifiers?: readonly ClientAssertionVerifier[];
  /** Releases what `init` opened (timers, sockets). Called once when the broker closes. */
  readonly close?: () => void | Promise<void>;
}

export interface PluginInitArgs<C, D extends PluginDeps> {
  /** The plugin's config block, already parsed by its schema. */
  readonly config: C;
  readonly deps: ResolvedDeps<D>;
  /** Directory of the broker config: relative paths in the plugin's config resolve against it. */
  readonly configDir: string;
  /**
   * `serve`: the broker will take traffic. `check`: a read-only command (`config validate`, `plugins list`,
   * `policy explain`) builds the plugin only to inspect it: check the config and build what `provides`
   * returns, but open no connections, run no startup probes and wait for nothing. Absent before API 1.4.
   */
  readonly purpose?: PluginPurpose;
}

export type PluginPurpose = 'serve' | 'check';

export interface PluginDefinition<S extends z.ZodType = z.ZodType, D extends PluginDeps = PluginDeps> {
  /** Kebab-case id, equal to the plugin's folder name. */
  readonly name: string;
  readonly version: string;
  /** Range of the core plugin API this plugin works with, e.g. `^1`. Checked by the loader. */
  readonly apiVersion: string;
  readonly description?: string;
  /** Schema of the plugin's config block. Also published in the broker's JSON Schema. */
  readonly config: S;
  readonly deps: D;
  init(args: PluginInitArgs<z.output<S>, D>): PluginProvides | Promise<PluginProvides>;
}

const PLUGIN_MARK = Symbol.for('tessera.plugin-definition');
const PLUGIN_NAME = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;

/** Declares a plugin. The result is the package's default export. */
export function definePlugin<S extends z.ZodType, D extends PluginDeps>(definition: PluginDefinition<S, D>): PluginDefinition<S, D> {
  const name = definition?.name;
  if (typeof name !== 'string' || !PLUGIN_NAME.test(name)) throw new TypeError(`plugin name ${JSON.stringify(name)} must be kebab-case`);
  const fail = (what: string): never => {
    throw new TypeError(`plugin ${name}: ${what}`);
  };
  if (typeof definition.version !== 'string' || definition.version === '') fail('version is required');
  if (typeof definition.apiVersion !== 'string' || definition.apiVersion === '') fail('apiVersion (a core API range such as ^1) is required');
  if (typeof definition.config?.safeParse !== 'function') fail('config must be a zod schema');
  if (typeof definition.init !== 'function') fail('init must be a function');
  for (const [key, dep] of Object.entries(definition.deps ?? {})) {
    if (typeof dep !== 'symbol') fail(`deps.${key} must be a token from the SDK's tokens`);
  }
  return Object.freeze({ ...definition, deps: definition.deps ?? ({} as D), [PLUGIN_MARK]: true });
}

/** True for values made by `definePlugin` (from any copy of the SDK). */
export function isPluginDefinition(value: unknown): value is PluginDefinition {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[PLUGIN_MARK] === true;
}
