import 'reflect-metadata';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

import type Koa from 'koa';
import { container as rootContainer, type DependencyContainer } from 'tsyringe';
import { tokens, TOKEN_TYPE_JWT_SVID, type BrokerInfo, type ClientAssertionVerifier, type Clock, type Logger, type ReplayStore, type RevocationList, type Token } from '@tessera/plugin-sdk';
import { PinoAuditSink, type AuditSink } from './audit/audit-log.js';
import { systemClock } from './clock.js';
import { ConfigError, type Locator } from './config/errors.js';
import { MAX_ISSUED_TOKEN_BYTES_LIMIT, type BrokerConfig } from './config/schema.js';
import { coreTokens } from './di/tokens.js';
import { provideFactory, provideValue, resolve } from './di/container.js';
import { createHttpApp } from './http/app.js';
import { createGuardedServer } from './http/connection-guard.js';
import { trackForDrain, type DrainOutcome, type Readiness } from './http/drain.js';
import type { ReadinessCheck } from './http/readiness.js';
import { GuardedFetcher, type Resolver } from './http/fetcher.js';
import { authorizationServerMetadata } from './http/metadata.js';
import { loadKeyRing } from './keys/key-ring.js';
import { PromMetrics } from './metrics.js';
import { DEFAULT_JWKS_OPTIONS, RemoteJwksCache, type RemoteJwksOptions } from './keys/remote-jwks.js';
import { createLogger } from './logging.js';
import { ClientAuthenticator } from './oauth/client-auth.js';
import { ExchangePipeline } from './oauth/exchange-pipeline.js';
import { InMemoryReplayStore } from './oauth/replay-store.js';
import { IntrospectionEndpoint } from './oauth/introspection.js';
import { InMemoryRevocationList, RevocationEndpoint } from './oauth/revocation.js';
import { GRANT_TYPE_URIS, TOKEN_ENDPOINT_METRICS, TokenEndpoint } from './oauth/token-endpoint.js';
import { initPlugins, resolvePlugins, type LoadedPlugin } from './plugins/loader.js';
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
  readonly replayStore?: ReplayStore;
  /** Revoked token ids (RFC 7009); replicas need a shared one. */
  readonly revocationList?: RevocationList;
  /** DNS resolution for outbound fetches (tests point names at loopback); every answer is still checked. */
  readonly resolver?: Resolver;
  readonly jwks?: Partial<RemoteJwksOptions>;
}

export interface RunningServer {
  readonly url: string;
  readonly server: Server;
  /** Graceful close: see `ServerDrain.drain`. */
  drain(timeoutMs: number): Promise<DrainOutcome>;
  /** Immediate close: every connection is destroyed. */
  close(): Promise<void>;
}

export interface Broker {
  readonly config: BrokerConfig;
  readonly info: BrokerInfo;
  readonly app: Koa;
  readonly plugins: readonly LoadedPlugin[];
  /** The broker's own child container. */
  readonly container: DependencyContainer;
  resolve<T>(key: Token<T>): T;
  /** Listens on the configured address (PORT overrides the port). */
  listen(address?: { host?: string; port?: number }): Promise<RunningServer>;
  /** What `/readyz` reports. */
  readiness(): Readiness;
  /**
   * Marks the broker not ready and drains every listening server within `lifecycle.drainTimeoutMs`
   * (in-flight requests finish, connections close). `close()` is still needed afterwards.
   */
  drain(): Promise<DrainOutcome>;
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
  const keyRing = await loadKeyRing(config.keys, { baseDir, dataDir: config.dataDir, log });

  provideValue(container, coreTokens.config, config);
  provideValue(container, tokens.clock, clock);
  provideValue(container, tokens.logger, log);
  provideValue(container, tokens.httpFetcher, fetcher);
  provideValue(container, tokens.jwksCache, jwks);
  provideValue(container, tokens.keyRing, keyRing);
  provideValue(container, tokens.replayStore, options.replayStore ?? new InMemoryReplayStore(clock));
  // Before plugins start: the access-token plugin checks it for its own tokens.
  provideValue(container, tokens.revocationList, options.revocationList ?? new InMemoryRevocationList(clock));
  provideValue(container, tokens.brokerInfo, { issuer: info.issuer, tokenEndpoint: info.tokenEndpoint });
  const metrics = new PromMetrics();
  provideValue(container, tokens.metrics, metrics.forPlugins(TOKEN_ENDPOINT_METRICS));

  try {
    const plugins = await initPlugins(resolved, container, (close) => closers.push(close), baseDir);
    return await assemble(config, { ...options, baseDir }, { container, closers, log, info, keyRing, metrics, plugins });
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

interface Assembly {
  readonly container: DependencyContainer;
  readonly closers: (() => void | Promise<void>)[];
  readonly log: Logger;
  readonly info: ReturnType<typeof brokerInfoFor>;
  readonly keyRing: Awaited<ReturnType<typeof loadKeyRing>>;
  readonly metrics: PromMetrics;
  readonly plugins: readonly LoadedPlugin[];
}

async function assemble(config: BrokerConfig, options: BrokerOptions & { baseDir: string }, parts: Assembly): Promise<Broker> {
  const { container, closers, log, info, keyRing, metrics, plugins } = parts;
  const baseDir = options.baseDir;
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

  let audit = options.audit;
  if (!audit) {
    const sink = new PinoAuditSink(config.audit.destination, baseDir);
    closers.push(() => sink.close());
    audit = sink;
  }
  provideValue(container, coreTokens.audit, audit);
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
  provideFactory(container, coreTokens.introspectionEndpoint, (c) => new IntrospectionEndpoint({ ...ownTokenEndpointDeps(c), clients: config.endpoints.introspection.clients }));

  // Resolve eagerly so config errors (bad client keys, bad hashes, bad rule defaults) stop startup, not the first request.
  resolve(container, coreTokens.policy);
  const authenticator = resolve(container, coreTokens.clientAuthenticator);
  checkFrontDoors(config, issuers, authenticator);
  const unverifiable = authenticator.requiredAssertionTypes().filter((type) => !assertionVerifiers.has(type));
  if (unverifiable.length > 0) throw new ConfigError([`clients: no plugin verifies client assertions of type ${unverifiable.join(', ')} (spiffe_jwt clients need @tessera/plugin-spiffe)`]);
  const grantTypes = [...new Set(config.clients.flatMap((client) => client.grantTypes))].map((name) => GRANT_TYPE_URIS[name]);
  // Ready only once the broker below is whole (keys loaded, plugins started), until a drain begins.
  let readiness: Readiness = 'starting';
  // What `/readyz` asks beyond the lifecycle state; each room that depends on something registers it here.
  const readinessChecks: ReadinessCheck[] = [{ name: 'keys', check: () => (keyRing.publicJwks().keys.length > 0 ? undefined : 'no signing key') }];
  const app = createHttpApp({
    readiness: () => readiness,
    readinessChecks,
    tokenEndpoint: resolve(container, coreTokens.tokenEndpoint),
    revocationEndpoint: resolve(container, coreTokens.revocationEndpoint),
    introspectionEndpoint: resolve(container, coreTokens.introspectionEndpoint),
    keyRing,
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

  const servers = new Set<RunningServer>();
  let closed = false;
  const broker: Broker = {
    config,
    info: { issuer: info.issuer, tokenEndpoint: info.tokenEndpoint },
    app,
    plugins,
    container,
    resolve: (key) => resolve(container, key),
    async listen(address = {}) {
      const envPort = process.env.PORT ? Number(process.env.PORT) : undefined;
      const port = address.port ?? envPort ?? config.listen.port;
      const host = address.host ?? config.listen.host;
      const server = createGuardedServer(config.limits.connections, log, app.callback());
      const tracked = trackForDrain(server, log);
      await new Promise<void>((done, fail) => {
        server.once('error', fail);
        server.listen(port, host, () => done());
      });
      const bound = server.address() as AddressInfo;
      const running: RunningServer = {
        url: `http://${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}`,
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
    readiness: () => readiness,
    async drain() {
      readiness = 'draining';
      const outcomes = await Promise.all([...servers].map((server) => server.drain(config.lifecycle.drainTimeoutMs)));
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
      for (const close of closers.reverse()) await close();
      container.clearInstances();
    },
  };
  readiness = 'ready';
  return broker;
}

