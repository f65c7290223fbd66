import 'reflect-metadata';
import type { RequestListener } from 'node:http';
import type Koa from 'koa';
import type { DependencyContainer } from 'tsyringe';
import type { BrokerInfo, Token } from '@tessera/plugin-sdk';
import { ConfigError, type Locator } from './config/errors.js';
import type { BrokerConfig } from './config/schema.js';
import { loadConfigFiles } from './config/load.js';
import { resolve } from './di/container.js';
import type { DrainOutcome, Readiness } from './http/drain.js';
import type { KeyPlan, KeyStatus } from './keys/key-rotation.js';
import { resolvePlugins, type LoadedPlugin, type PluginEntryResult } from './plugins/loader.js';
import { configDigest } from './reload/config-diff.js';
import { GenerationSwitch } from './reload/generations.js';
import { Reloader, type ConfigGeneration, type ConfigSource, type ReloadOutcome } from './reload/reloader.js';
import { generationApp } from './compose/http-app.js';
import { planGeneration, planKeySchedule } from './compose/plan.js';
import { locateProblems } from './compose/problems.js';
import { Listeners, type RunningServer } from './compose/server.js';
import { openProcessScope, type ProcessScope, type ScopeOptions } from './compose/scope.js';

export { brokerInfoFor } from './compose/scope.js';
export type { RunningServer } from './compose/server.js';

/** Edges a host (or a test) may replace (see `ScopeOptions`), and where the config came from. */
export interface BrokerOptions extends Partial<ScopeOptions> {
  readonly locate?: Locator;
  /** Config files and directories the config was loaded from, in merge order: `reload()` reads them again. */
  readonly configFiles?: readonly string[];
}

/** `config`, `app`, `plugins` and `container` are those of the config serving now; a reload replaces them. */
export interface Broker {
  readonly config: BrokerConfig;
  readonly info: BrokerInfo;
  readonly app: Koa;
  readonly plugins: readonly LoadedPlugin[];
  /** The serving config's container, a child of the broker's own. */
  readonly container: DependencyContainer;
  resolve<T>(key: Token<T>): T;
  /** Request handler that sends each request to the config serving when it arrives (what `listen` uses). */
  callback(): RequestListener;
  /**
   * Builds the broker anew from `config`, or from the `configFiles` read again, and swaps it in whole;
   * on any problem the running config keeps serving and the outcome says why.
   */
  reload(config?: BrokerConfig): Promise<ReloadOutcome>;
  /** Which key signs, which signs next and when, which are published. */
  keys(): KeyStatus;
  /** Reopens the audit file at its path (SIGHUP after logrotate moved it). */
  reopenAudit(): Promise<void>;
  /** Listens on the configured address (PORT overrides the port). */
  listen(address?: { host?: string; port?: number }): Promise<RunningServer>;
  /** What `/readyz` reports. */
  readiness(): Readiness;
  /**
   * Marks the broker not ready and drains every listening server within `lifecycle.drainTimeoutMs`
   * (in-flight requests finish, connections close). `close()` is still needed afterwards.
   */
  drain(): Promise<DrainOutcome>;
  /** Rejects (after closing everything) when the audit sink could not finish its writes within `audit.closeTimeoutMs`. */
  close(): Promise<void>;
}

/**
 * The composition root, top to bottom: the process scope (store, audit, keys, TLS: `compose/scope.ts`),
 * then the first config's plan (plugins, registries, policy, clients, every cross-check:
 * `compose/plan.ts`) and its HTTP app (`compose/http-app.ts`), then the broker around it: listeners
 * (`compose/server.ts`), drain, close and reload, which plans the next config the same way.
 */
export async function createBroker(config: BrokerConfig, options: BrokerOptions = {}): Promise<Broker> {
  const baseDir = options.baseDir ?? process.cwd();
  // Plugin problems are config problems: report them before anything is opened or created on disk (a dev key).
  const resolved = await resolvePlugins(config.plugins, baseDir, options.locate);
  const scope = await openProcessScope(config, { ...options, baseDir });
  try {
    const build = (source: ConfigSource, id: number, preResolved?: readonly PluginEntryResult[]) => buildGeneration(source, id, scope, preResolved);
    const first = await build({ config, baseDir, ...(options.locate ? { locate: options.locate } : {}) }, 1, resolved);
    return openBroker(first, scope, { ...options, baseDir }, build);
  } catch (error) {
    await scope.close().catch(() => undefined);
    throw error;
  }
}

interface BrokerGeneration extends ConfigGeneration {
  readonly app: Koa;
  readonly plugins: readonly LoadedPlugin[];
  readonly container: DependencyContainer;
}

/** One config: its key schedule, then its plan and HTTP app. Nothing here serves until swapped in. */
async function buildGeneration(source: ConfigSource, id: number, scope: ProcessScope, preResolved?: readonly PluginEntryResult[]): Promise<BrokerGeneration> {
  const { config, baseDir } = source;
  // Keys first: a local file that cannot be read stops startup before any plugin dials out.
  let keyPlan: KeyPlan;
  try {
    keyPlan = await planKeySchedule(config, scope.keyRing, { baseDir, log: scope.log, generate: true });
  } catch (error) {
    throw error instanceof ConfigError ? new ConfigError(locateProblems(error.problems, source.locate)) : error;
  }
  const plan = await planGeneration(source, scope.container, { purpose: 'serve', ...(preResolved ? { preResolved } : {}) });
  try {
    const app = generationApp(plan, scope);
    return { id, config, digest: configDigest(config), keyPlan, app, listener: app.callback(), plugins: plan.plugins, container: plan.container, close: () => plan.close() };
  } catch (error) {
    await plan.close().catch(() => undefined);
    throw error;
  }
}

/** The broker around its first generation: listeners, drain and close, and reload, which swaps generations. */
function openBroker(first: BrokerGeneration, scope: ProcessScope, options: BrokerOptions & { baseDir: string }, build: (source: ConfigSource, id: number) => Promise<BrokerGeneration>): Broker {
  const { log, info, keyRing, lifecycle } = scope;
  const generations = new GenerationSwitch(first, log);
  keyRing.commit(first.keyPlan);
  // The digest a later `reload applied` line names as previousDigest.
  log.info({ generation: first.id, digest: first.digest, signingKid: keyRing.status().signing }, 'config: serving');
  // The listeners' settings are restart-only (a reload changing them is rejected): the first config's hold.
  const listeners = new Listeners(first.config, generations.listener, log, scope.tls);
  let closed = false;
  const configFiles = options.configFiles;
  const reloader = new Reloader<BrokerGeneration>({
    generations,
    keyRing,
    log,
    metrics: scope.metrics,
    build,
    accepting: () => !closed && lifecycle.readiness === 'ready',
    baseDir: options.baseDir,
    ...(options.locate ? { locate: options.locate } : {}),
    ...(configFiles && configFiles.length > 0
      ? {
          read: async () => {
            const loaded = await loadConfigFiles(configFiles);
            return { config: loaded.config, baseDir: loaded.baseDir, locate: loaded.locate };
          },
        }
      : {}),
  });
  const broker: Broker = {
    get config() {
      return generations.current.config;
    },
    info: { issuer: info.issuer, tokenEndpoint: info.tokenEndpoint },
    get app() {
      return generations.current.app;
    },
    get plugins() {
      return generations.current.plugins;
    },
    get container() {
      return generations.current.container;
    },
    resolve: (key) => resolve(generations.current.container, key),
    callback: () => generations.listener,
    reload: (next) => reloader.reload(next),
    keys: () => keyRing.status(),
    reopenAudit: async () => scope.auditSink?.reopen(),
    listen: (address) => listeners.listen(address),
    readiness: () => lifecycle.readiness,
    async drain() {
      lifecycle.readiness = 'draining';
      return listeners.drain(generations.current.config.lifecycle.drainTimeoutMs);
    },
    async close() {
      if (closed) return;
      closed = true;
      await listeners.close();
      try {
        // A reload under way finishes (and is then turned away) before the generations close.
        await reloader.idle();
        await generations.closeAll();
      } finally {
        // Every closer runs, whatever a plugin's close did; the first failure (an audit sink that could
        // not finish) is reported after.
        await scope.close();
      }
    },
  };
  lifecycle.readiness = 'ready';
  return broker;
}
