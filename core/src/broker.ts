import 'reflect-metadata';
import type { RequestListener, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Server as TlsServer } from 'node:tls';

import type Koa from 'koa';
import { container as rootContainer, type DependencyContainer } from 'tsyringe';
import { tokens, TOKEN_TYPE_JWT_SVID, type BrokerInfo, type ClientAssertionVerifier, type Clock, type Logger, type ReplayStore, type RevocationList, type Token } from '@tessera/plugin-sdk';
import { AuditSinkError, type AuditSink } from './audit/audit-log.js';
import { openAuditSink, type ChainedAuditSink } from './audit/chained-sink.js';
import { systemClock } from './clock.js';
import { ConfigError, type Locator } from './config/errors.js';
import { MAX_ISSUED_TOKEN_BYTES_LIMIT, type BrokerConfig } from './config/schema.js';
import { coreTokens } from './di/tokens.js';
import { provideFactory, provideValue, resolve } from './di/container.js';
import { createHttpApp } from './http/app.js';
import { createGuardedServer } from './http/connection-guard.js';
import { ADMISSION_METRICS, admissionControl } from './http/load-shedding.js';
import { clientRateLimiterFor, RATE_LIMIT_METRICS } from './oauth/rate-limit.js';
import { openListenerTls, type ListenerTls } from './http/tls.js';
import { trackForDrain, type DrainOutcome, type Readiness } from './http/drain.js';
import type { ReadinessCheck } from './http/readiness.js';
import { GuardedFetcher, type Resolver } from './http/fetcher.js';
import { authorizationServerMetadata } from './http/metadata.js';
import { loadSigningKeys } from './keys/key-ring.js';
import { RotatingKeyRing, type KeyStatus } from './keys/key-rotation.js';
import { loadConfigFiles } from './config/load.js';
import { configDigest } from './reload/config-diff.js';
import { GenerationSwitch } from './reload/generations.js';
import { Reloader, type ConfigGeneration, type ConfigSource, type ReloadOutcome } from './reload/reloader.js';
import { PromMetrics } from './metrics.js';
import { DEFAULT_JWKS_OPTIONS, RemoteJwksCache, type RemoteJwksOptions } from './keys/remote-jwks.js';
import { createLogger } from './logging.js';
import { ClientAuthenticator } from './oauth/client-auth.js';
import { ExchangePipeline } from './oauth/exchange-pipeline.js';
import { StoreReplayStore } from './oauth/replay-store.js';
import { IntrospectionEndpoint } from './oauth/introspection.js';
import { RevocationEndpoint, StoreRevocationList } from './oauth/revocation.js';
import { KillSwitch } from './state/kill-switch.js';
import { AdminRevocationsEndpoint, checkAdminClients } from './state/kill-switch-admin.js';
import { openStateStore } from './state/open-store.js';
import { StoreUnsafe, type StateStore } from './state/store.js';
import { ADMIN_REVOCATIONS_PATH } from './http/admin-routes.js';
import { GRANT_TYPE_URIS, TOKEN_ENDPOINT_METRICS, TokenEndpoint } from './oauth/token-endpoint.js';
import { initPlugins, resolvePlugins, type LoadedPlugin, type PluginEntryResult } from './plugins/loader.js';
import { grantActorTrust } from './plugins/actor-trust.js';
import { declaredSkewProblem, IssuerRegistry, ValidatorRegistry } from './plugins/registry.js';
import { PolicyEngine } from './policy/policy-engine.js';

/** Edges a host (or a test) may replace. Each is registered in the broker's own container. */
export interface BrokerOptions {
  /** Directory relative config paths resolve against (default: cwd). */
  readonly baseDir?: string;
  readonly locate?: Locator;
  readonly clock?: Clock;
  readonly logger?: Logger;
  readonly audit?: AuditSink;
  /** The slot (1…N) of a `tessera serve --workers N` worker: names its audit chains and fills `{worker}` in the audit file. */
  readonly worker?: number;
  readonly replayStore?: ReplayStore;
  /** Revoked token ids (RFC 7009); replicas need a shared one. */
  readonly revocationList?: RevocationList;
  /** Shared state instead of the one `store:` configures (the host then closes it). */
  readonly store?: StateStore;
  /** DNS resolution for outbound fetches (tests point names at loopback); every answer is still checked. */
  readonly resolver?: Resolver;
  readonly jwks?: Partial<RemoteJwksOptions>;
  /** Config files and directories the config was loaded from, in merge order: `reload()` reads them again. */
  readonly configFiles?: readonly string[];
}

export interface RunningServer {
  readonly url: string;
  readonly server: Server;
  /** Graceful close: see `ServerDrain.drain`. */
  drain(timeoutMs: number): Promise<DrainOutcome>;
  /** Immediate close: every connection is destroyed. */
  close(): Promise<void>;
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

/** Derives where the broker is reached from its issuer identifier. */
export function brokerInfoFor(issuer: string): BrokerInfo & { basePath: string; jwksUri: string; revocationEndpoint: string; introspectionEndpoint: string } {
  const base = issuer.replace(/\/$/, '');
  return {
    issuer,
    tokenEndpoint: `${base}/token`,
    jwksUri: `${base}/keys`,
    revocationEndpoint: `${base}/revoke`,
    introspectionEndpoint: `${base}/introspect`,
    basePath: new URL(issuer).pathname,
  };
}

/**
 * The composition root: builds one broker on its own child container. Async setup (keys, plugins) runs
 * first; everything else is a cached factory on the child container, so two brokers share nothing.
 */
export async function createBroker(config: BrokerConfig, options: BrokerOptions = {}): Promise<Broker> {
  const baseDir = options.baseDir ?? process.cwd();
  const container = rootContainer.createChildContainer();
  const closers: (() => void | Promise<void>)[] = [];
  const log = options.logger ?? createLogger(config.log.level);
  const clock = options.clock ?? systemClock;
  const info = brokerInfoFor(config.issuer);

  // Plugin problems are config problems: report them before anything is created on disk (a dev key).
  const resolved = await resolvePlugins(config.plugins, baseDir, options.locate);
  const fetcher = new GuardedFetcher(config.network, options.resolver);
  closers.push(() => fetcher.close());
  const jwks = new RemoteJwksCache(fetcher, clock, log, { ...DEFAULT_JWKS_OPTIONS, ...options.jwks });
  // Lives as long as the process: keys that signed stay published across reloads until their tokens expire.
  const keyRing = new RotatingKeyRing(clock, log);

  provideValue(container, tokens.clock, clock);
  provideValue(container, tokens.logger, log);
  provideValue(container, tokens.httpFetcher, fetcher);
  provideValue(container, tokens.jwksCache, jwks);
  provideValue(container, tokens.keyRing, keyRing);
  // Before plugins start: replay records, the revocation list (the access-token plugin checks it for its
  // own tokens) and the kill switch live there. A Redis that is down does not stop startup (not ready).
  const store = options.store ?? (await openStateStore(config.store, { clock, log }));
  if (!options.store) closers.push(() => store.close());
  provideValue(container, coreTokens.stateStore, store);
  provideValue(container, coreTokens.killSwitch, new KillSwitch(store, clock));
  provideValue(container, tokens.replayStore, options.replayStore ?? new StoreReplayStore(store, clock));
  provideValue(container, tokens.revocationList, options.revocationList ?? new StoreRevocationList(store, clock));
  provideValue(container, tokens.brokerInfo, { issuer: info.issuer, tokenEndpoint: info.tokenEndpoint });
  const metrics = new PromMetrics();
  provideValue(container, tokens.metrics, metrics.forPlugins([...TOKEN_ENDPOINT_METRICS, ...ADMISSION_METRICS, ...RATE_LIMIT_METRICS]));

  try {
    const tls = config.listen.tls ? await openListenerTls(config.listen.tls, { baseDir, log }) : undefined;
    if (tls) closers.push(() => tls.close());
    // Process-wide like the listeners: its chain must not fork across a reload.
    const auditSink = options.audit ? undefined : await openAuditSink(config.audit, baseDir, log, options.worker);
    if (auditSink) {
      const closeTimeoutMs = config.audit.closeTimeoutMs;
      closers.push(async () => {
        if (!(await auditSink.close(closeTimeoutMs))) throw new AuditSinkError(`records still unwritten after ${closeTimeoutMs} ms at shutdown`);
      });
    }
    provideValue(container, coreTokens.audit, options.audit ?? auditSink!);
    // One in-flight bound for the process: requests of a replaced config still hold their slots.
    const admit = admissionControl(config.limits.inFlight, metrics, log);
    const scope: ProcessScope = { container, closers, log, info, keyRing, metrics, tls, auditSink, admit, lifecycle: { readiness: 'starting' } };
    const build = (source: ConfigSource, id: number, preResolved?: readonly PluginEntryResult[]) => buildGeneration(source, id, scope, preResolved);
    const first = await build({ config, baseDir, ...(options.locate ? { locate: options.locate } : {}) }, 1, resolved);
    return openBroker(first, scope, { ...options, baseDir }, build);
  } catch (error) {
    // Startup failed after plugins opened resources: release them before reporting.
    for (const close of closers.reverse()) await Promise.resolve(close()).catch(() => undefined);
    throw error;
  }
}

/** A door that could never answer is a config error, not a stream of failed requests. */
function checkFrontDoors(config: BrokerConfig, issuers: IssuerRegistry, authenticator: ClientAuthenticator): void {
  const problems: string[] = [];
  const door = config.endpoints.spiffeExchange;
  if (door.enabled) {
    if (!issuers.get(TOKEN_TYPE_JWT_SVID)) problems.push(`endpoints.spiffeExchange: no issuer plugin handles ${TOKEN_TYPE_JWT_SVID} (e.g. @tessera/plugin-spire-jwt-svid)`);
    if (door.publicClient !== undefined && authenticator.clientConfig(door.publicClient)?.auth.method !== 'none') {
      problems.push(`endpoints.spiffeExchange.publicClient: "${door.publicClient}" is not a configured client with auth method none`);
    }
  }
  const introspection = config.endpoints.introspection;
  if (introspection.enabled) {
    // A public client can never introspect, and an unknown id is a typo that would silently grant nothing.
    for (const [index, id] of introspection.clients.entries()) {
      const method = authenticator.clientConfig(id)?.auth.method;
      if (method === undefined || method === 'none') problems.push(`endpoints.introspection.clients[${index}]: "${id}" is not a configured client that authenticates`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
}

/** What lives as long as the process, whatever config serves: listeners, logger, metrics, stores, audit, keys. */
interface ProcessScope {
  readonly container: DependencyContainer;
  readonly closers: (() => void | Promise<void>)[];
  readonly log: Logger;
  readonly info: ReturnType<typeof brokerInfoFor>;
  readonly keyRing: RotatingKeyRing;
  readonly metrics: PromMetrics;
  /** The listeners' certificate, when `listen.tls` is set. */
  readonly tls?: ListenerTls | undefined;
  /** The configured audit sink (absent when the host passed its own). */
  readonly auditSink?: ChainedAuditSink | undefined;
  /** Ready only once the first config is whole (keys loaded, plugins started), until a drain begins. */
  readonly lifecycle: { readiness: Readiness };
  /** Admission control (`limits.inFlight`), shared by every door of every config. */
  readonly admit: ReturnType<typeof admissionControl>;
}

interface BrokerGeneration extends ConfigGeneration {
  readonly app: Koa;
  readonly plugins: readonly LoadedPlugin[];
  readonly container: DependencyContainer;
}

/** The longest lifetime a token signed under `config` can have: policy grants it, issuers only shorten it. */
function longestTokenLifetimeSeconds(config: BrokerConfig): number {
  return Math.max(0, ...config.policy.rules.map((rule) => rule.grant.maxLifetimeSeconds));
}

/**
 * Everything one config builds, on a child of the process container: plugins, key schedule, registries,
 * policy, client authenticator, pipeline, endpoints and the Koa app. Nothing here serves until swapped in.
 */
async function buildGeneration(source: ConfigSource, id: number, scope: ProcessScope, preResolved?: readonly PluginEntryResult[]): Promise<BrokerGeneration> {
  const { config, baseDir } = source;
  const resolved = preResolved ?? (await resolvePlugins(config.plugins, baseDir, source.locate));
  const signingKeys = await loadSigningKeys(config.keys, { baseDir, dataDir: config.dataDir, log: scope.log });
  const keyPlan = await scope.keyRing.plan(signingKeys, { publishAheadSeconds: config.keys.publishAheadSeconds, maxTokenLifetimeSeconds: longestTokenLifetimeSeconds(config) });
  const container = scope.container.createChildContainer();
  const closers: (() => void | Promise<void>)[] = [];
  const close = async () => {
    for (const closer of closers.reverse()) await closer();
    container.clearInstances();
  };
  provideValue(container, coreTokens.config, config);
  try {
    const plugins = await initPlugins(resolved, container, (closer) => closers.push(closer), baseDir);
    const app = await assemble(config, { baseDir }, { ...scope, container, closers, plugins });
    return { id, config, digest: configDigest(config), keyPlan, app, listener: app.callback(), plugins, container, close };
  } catch (error) {
    // Plugins may have opened resources before a later check failed.
    await close().catch(() => undefined);
    throw error;
  }
}

interface Assembly extends ProcessScope {
  readonly plugins: readonly LoadedPlugin[];
}

async function assemble(config: BrokerConfig, options: { baseDir: string }, parts: Assembly): Promise<Koa> {
  const { container, log, info, keyRing, metrics, plugins, tls } = parts;
  const validators = new ValidatorRegistry();
  const issuers = new IssuerRegistry();
  for (const plugin of plugins) {
    for (const validator of plugin.provides.validators ?? []) validators.add(plugin.name, validator);
    for (const issuer of plugin.provides.issuers ?? []) issuers.add(plugin.name, issuer, plugin.apiVersion);
  }
  grantActorTrust(config.delegation, plugins, validators);
  const extractors = plugins.flatMap((plugin) => (plugin.provides.attributeExtractors ?? []).map((extractor) => ({ plugin: plugin.name, extractor })));
  const assertionVerifiers = new Map<string, ClientAssertionVerifier>();
  for (const plugin of plugins) {
    for (const verifier of plugin.provides.clientAssertionVerifiers ?? []) {
      const skewProblem = declaredSkewProblem(plugin.name, 'a client assertion verifier', verifier.clockSkewSeconds);
      if (skewProblem) throw new ConfigError([skewProblem]);
      for (const type of verifier.assertionTypes) {
        if (assertionVerifiers.has(type)) throw new ConfigError([`client assertion type ${type} is claimed by two plugins (second: "${plugin.name}")`]);
        assertionVerifiers.set(type, verifier);
      }
    }
  }
  provideValue(container, coreTokens.validators, validators);
  provideValue(container, coreTokens.issuers, issuers);

  provideFactory(container, coreTokens.policy, () => new PolicyEngine(config.policy.rules, { brokerIssuer: config.issuer, conditionTimeoutMs: config.limits.conditionTimeoutMs }));
  provideFactory(
    container,
    coreTokens.clientAuthenticator,
    (c) =>
      new ClientAuthenticator(config.clients, config.clientAuth, {
        jwks: resolve(c, tokens.jwksCache),
        replay: resolve(c, tokens.replayStore),
        clock: resolve(c, tokens.clock),
        broker: resolve(c, tokens.brokerInfo),
        assertionVerifiers,
        verificationTimeoutMs: config.limits.validationTimeoutMs,
        log: resolve(c, tokens.logger),
      }),
  );
  provideFactory(
    container,
    coreTokens.pipeline,
    (c) =>
      new ExchangePipeline({
        validators: resolve(c, coreTokens.validators),
        extractors,
        issuers: resolve(c, coreTokens.issuers),
        policy: resolve(c, coreTokens.policy),
        clock: resolve(c, tokens.clock),
        log: resolve(c, tokens.logger),
        broker: resolve(c, tokens.brokerInfo),
        validationTimeoutMs: config.limits.validationTimeoutMs,
        maxChainDepth: config.delegation.maxChainDepth,
        maxIssuedTokenBytes: config.limits.maxIssuedTokenBytes,
        killSwitch: resolve(c, coreTokens.killSwitch),
      }),
  );
  provideFactory(
    container,
    coreTokens.tokenEndpoint,
    (c) =>
      new TokenEndpoint({
        authenticator: resolve(c, coreTokens.clientAuthenticator),
        pipeline: resolve(c, coreTokens.pipeline),
        audit: resolve(c, coreTokens.audit),
        clock: resolve(c, tokens.clock),
        log: resolve(c, tokens.logger),
        broker: resolve(c, tokens.brokerInfo),
        metrics,
        rateLimiter: clientRateLimiterFor(config, resolve(c, coreTokens.clientAuthenticator), {
          store: resolve(c, coreTokens.stateStore),
          clock: resolve(c, tokens.clock),
          log: resolve(c, tokens.logger),
          metrics,
        }),
      }),
  );

  // Both endpoints answer about the broker's own tokens, for an authenticated client, with an audit record.
  const ownTokenEndpointDeps = (c: DependencyContainer) => ({
    authenticator: resolve(c, coreTokens.clientAuthenticator),
    keyRing: resolve(c, tokens.keyRing),
    revocationList: resolve(c, tokens.revocationList),
    audit: resolve(c, coreTokens.audit),
    clock: resolve(c, tokens.clock),
    log: resolve(c, tokens.logger),
    broker: resolve(c, tokens.brokerInfo),
    // Not today's limit: a token issued before the limit was lowered must still be revocable (and known).
    maxTokenBytes: MAX_ISSUED_TOKEN_BYTES_LIMIT,
  });
  provideFactory(container, coreTokens.revocationEndpoint, (c) => new RevocationEndpoint(ownTokenEndpointDeps(c)));
  provideFactory(container, coreTokens.introspectionEndpoint, (c) => new IntrospectionEndpoint({ ...ownTokenEndpointDeps(c), clients: config.endpoints.introspection.clients, killSwitch: resolve(c, coreTokens.killSwitch) }));

  // Resolve eagerly so config errors (bad client keys, bad hashes, bad rule defaults) stop startup, not the first request.
  resolve(container, coreTokens.policy);
  const authenticator = resolve(container, coreTokens.clientAuthenticator);
  checkFrontDoors(config, issuers, authenticator);
  checkAdminClients(config, authenticator);
  const unverifiable = authenticator.requiredAssertionTypes().filter((type) => !assertionVerifiers.has(type));
  if (unverifiable.length > 0) throw new ConfigError([`clients: no plugin verifies client assertions of type ${unverifiable.join(', ')} (spiffe_jwt clients need @tessera/plugin-spiffe)`]);
  const grantTypes = [...new Set(config.clients.flatMap((client) => client.grantTypes))].map((name) => GRANT_TYPE_URIS[name]);
  // What `/readyz` asks beyond the lifecycle state; each room that depends on something registers it here.
  const readinessChecks: ReadinessCheck[] = [{ name: 'keys', check: () => (keyRing.publicJwks().keys.length > 0 ? undefined : 'no signing key') }];
  if (tls) readinessChecks.push({ name: 'tls', check: () => tls.readiness() });
  const { auditSink } = parts;
  if (auditSink) readinessChecks.push({ name: 'audit', check: () => auditSink.problem() });
  const store = resolve(container, coreTokens.stateStore);
  const jwks = resolve(container, tokens.jwksCache);
  if (jwks instanceof RemoteJwksCache) {
    readinessChecks.push({
      name: 'issuers',
      check: async () => {
        const cold = await jwks.coldSources();
        // A count only: the failed fetches are logged with their origins, /readyz is public.
        return cold.length === 0 ? undefined : `keys of ${cold.length} trusted issuer(s) not fetched yet`;
      },
    });
  }
  readinessChecks.push({ name: 'store', check: () => store.ping().then(() => undefined, (error: unknown) => (error instanceof StoreUnsafe ? error.message : `${store.kind} store unreachable`)) });
  return createHttpApp({
    readiness: () => parts.lifecycle.readiness,
    readinessChecks,
    admit: parts.admit,
    tokenEndpoint: resolve(container, coreTokens.tokenEndpoint),
    revocationEndpoint: resolve(container, coreTokens.revocationEndpoint),
    introspectionEndpoint: resolve(container, coreTokens.introspectionEndpoint),
    ...(config.admin.clients.length > 0
      ? {
          adminRevocations: new AdminRevocationsEndpoint({
            authenticator,
            killSwitch: resolve(container, coreTokens.killSwitch),
            audit: resolve(container, coreTokens.audit),
            clock: resolve(container, tokens.clock),
            log,
            clients: config.admin.clients,
            endpointUrl: `${info.issuer.replace(/\/$/, '')}${ADMIN_REVOCATIONS_PATH}`,
          }),
        }
      : {}),
    keyRing,
    jwksMaxAgeSeconds: config.keys.publishAheadSeconds,
    log,
    metrics,
    endpoints: config.endpoints,
    basePath: info.basePath,
    maxBodyBytes: config.limits.maxBodyBytes,
    metadata: authorizationServerMetadata({
      broker: info,
      jwksUri: info.jwksUri,
      grantTypes,
      authMethods: authenticator.methodsSupported(),
      authSigningAlgorithms: authenticator.signingAlgorithms(),
      subjectTokenTypes: validators.types(),
      issuedTokenTypes: issuers.types(),
      ...(config.endpoints.revocation.enabled ? { revocationEndpoint: info.revocationEndpoint } : {}),
      ...(config.endpoints.introspection.enabled ? { introspectionEndpoint: info.introspectionEndpoint } : {}),
    }),
  });
}

/** The broker around its first generation: listeners, drain and close, and reload, which swaps generations. */
function openBroker(first: BrokerGeneration, scope: ProcessScope, options: BrokerOptions & { baseDir: string }, build: (source: ConfigSource, id: number) => Promise<BrokerGeneration>): Broker {
  const { container, closers, log, info, keyRing, tls, lifecycle } = scope;
  // The listeners' settings are restart-only (a reload changing them is rejected): the first config's hold.
  const config = first.config;
  const generations = new GenerationSwitch(first, log);
  keyRing.commit(first.keyPlan);
  // The digest a later `reload applied` line names as previousDigest.
  log.info({ generation: first.id, digest: first.digest, signingKid: keyRing.status().signing }, 'config: serving');
  const servers = new Set<RunningServer>();
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
    async listen(address = {}) {
      const envPort = process.env.PORT ? Number(process.env.PORT) : undefined;
      const port = address.port ?? envPort ?? config.listen.port;
      const host = address.host ?? config.listen.host;
      const server = createGuardedServer(config.limits.connections, log, generations.listener, tls?.serverOptions());
      if (tls) tls.attach(server as unknown as TlsServer);
      const tracked = trackForDrain(server, log);
      await new Promise<void>((done, fail) => {
        server.once('error', fail);
        server.listen(port, host, () => done());
      });
      const bound = server.address() as AddressInfo;
      const running: RunningServer = {
        url: `${tls ? 'https' : 'http'}://${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}`,
        server,
        drain: (timeoutMs) => {
          servers.delete(running);
          return tracked.drain(timeoutMs);
        },
        close: () =>
          new Promise<void>((done) => {
            servers.delete(running);
            server.close(() => done());
            server.closeAllConnections();
          }),
      };
      servers.add(running);
      return running;
    },
    readiness: () => lifecycle.readiness,
    async drain() {
      lifecycle.readiness = 'draining';
      const outcomes = await Promise.all([...servers].map((server) => server.drain(generations.current.config.lifecycle.drainTimeoutMs)));
      return outcomes.reduce(
        (total, outcome) => ({
          completed: total.completed + outcome.completed,
          cut: total.cut + outcome.cut,
          timedOut: total.timedOut || outcome.timedOut,
          elapsedMs: Math.max(total.elapsedMs, outcome.elapsedMs),
        }),
        { completed: 0, cut: 0, timedOut: false, elapsedMs: 0 },
      );
    },
    async close() {
      if (closed) return;
      closed = true;
      await Promise.all([...servers].map((server) => server.close()));
      // A reload under way finishes (and is then turned away) before the generations close.
      await reloader.idle();
      await generations.closeAll();
      // Every closer runs; the first failure (an audit sink that could not finish) is reported after.
      let failure: unknown;
      for (const close of closers.reverse()) await Promise.resolve(close()).catch((error: unknown) => (failure ??= error));
      container.clearInstances();
      if (failure !== undefined) throw failure;
    },
  };
  lifecycle.readiness = 'ready';
  return broker;
}

