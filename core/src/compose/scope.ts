import { access, constants, stat } from 'node:fs/promises';
import { dirname, resolve as resolvePath } from 'node:path';
import { container as rootContainer, type DependencyContainer } from 'tsyringe';
import { tokens, UpstreamError, type BrokerInfo, type Clock, type HttpFetcher, type Logger, type ReplayStore, type RevocationList } from '@tessera/plugin-sdk';
import { AuditSinkError, MemoryAuditSink, type AuditSink } from '../audit/audit-log.js';
import { auditFilePath, openAuditSink, type ChainedAuditSink } from '../audit/chained-sink.js';
import { systemClock } from '../clock.js';
import type { BrokerConfig } from '../config/schema.js';
import { coreTokens } from '../di/tokens.js';
import { provideValue } from '../di/container.js';
import { ADMISSION_METRICS, admissionControl } from '../http/load-shedding.js';
import { GuardedFetcher, type Resolver } from '../http/fetcher.js';
import type { Readiness } from '../http/drain.js';
import { openListenerTls, type ListenerTls } from '../http/tls.js';
import { RotatingKeyRing } from '../keys/key-rotation.js';
import { DEFAULT_JWKS_OPTIONS, RemoteJwksCache, type RemoteJwksOptions } from '../keys/remote-jwks.js';
import { createLogger, silentLogger } from '../logging.js';
import { PromMetrics } from '../metrics.js';
import { VERIFIED_TOKEN_METRICS } from '../oauth/verified-token-cache.js';
import { RATE_LIMIT_METRICS } from '../oauth/rate-limit.js';
import { collectProblems } from './problems.js';
import { StoreReplayStore } from '../oauth/replay-store.js';
import { StoreRevocationList } from '../oauth/revocation.js';
import { TOKEN_ENDPOINT_METRICS } from '../oauth/token-endpoint.js';
import { KillSwitch } from '../state/kill-switch.js';
import { MemoryStateStore } from '../state/memory-store.js';
import { openStateStore } from '../state/open-store.js';
import type { StateStore } from '../state/store.js';

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

/** Edges a host (or a test) may replace when opening a process scope. Each is registered in the broker's own container. */
export interface ScopeOptions {
  /** Directory relative config paths resolve against (default: cwd). */
  readonly baseDir: string;
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
}

/** What lives as long as the process, whatever config serves: logger, metrics, store, audit, keys, TLS. */
export interface ProcessScope {
  readonly container: DependencyContainer;
  readonly closers: (() => void | Promise<void>)[];
  readonly log: Logger;
  readonly info: ReturnType<typeof brokerInfoFor>;
  readonly keyRing: RotatingKeyRing;
  readonly metrics: PromMetrics;
  /** The listeners' certificate, when `listen.tls` is set. */
  readonly tls?: ListenerTls | undefined;
  /** The configured audit sink (absent when the host passed its own, or for a read-only command). */
  readonly auditSink?: ChainedAuditSink | undefined;
  /** Ready only once the first config is whole (keys loaded, plugins started), until a drain begins. */
  readonly lifecycle: { readiness: Readiness };
  /** Admission control (`limits.inFlight`), shared by every door of every config. */
  readonly admit: ReturnType<typeof admissionControl>;
  /** Runs every closer, last opened first; the first failure is thrown after all have run. */
  close(): Promise<void>;
}

/** The services every config's plugins and endpoints resolve, on the process's own child container. */
function provideProcessServices(
  container: DependencyContainer,
  parts: { clock: Clock; log: Logger; fetcher: HttpFetcher; jwks: RemoteJwksCache; keyRing: RotatingKeyRing; store: StateStore; metrics: PromMetrics; info: BrokerInfo },
  options: Pick<ScopeOptions, 'replayStore' | 'revocationList'>,
): void {
  const { clock, log, fetcher, jwks, keyRing, store, metrics, info } = parts;
  provideValue(container, tokens.clock, clock);
  provideValue(container, tokens.logger, log);
  provideValue(container, tokens.httpFetcher, fetcher);
  provideValue(container, tokens.jwksCache, jwks);
  provideValue(container, tokens.keyRing, keyRing);
  provideValue(container, coreTokens.stateStore, store);
  provideValue(container, coreTokens.killSwitch, new KillSwitch(store, clock));
  provideValue(container, tokens.replayStore, options.replayStore ?? new StoreReplayStore(store, clock));
  provideValue(container, tokens.revocationList, options.revocationList ?? new StoreRevocationList(store, clock));
  provideValue(container, tokens.brokerInfo, { issuer: info.issuer, tokenEndpoint: info.tokenEndpoint });
  provideValue(container, coreTokens.verifiedTokenCounter, metrics.counter(VERIFIED_TOKEN_METRICS[0], 'Subject and actor token validations: verified by their plugin, or a verification reused', ['outcome']));
  provideValue(container, tokens.metrics, metrics.forPlugins([...TOKEN_ENDPOINT_METRICS, ...ADMISSION_METRICS, ...RATE_LIMIT_METRICS, ...VERIFIED_TOKEN_METRICS]));
}

/**
 * A close that runs every closer, last opened first, even when one fails (the others still release what
 * they hold); the first failure is thrown after all have run. A second call finds nothing left to run.
 */
export function closeAll(closers: (() => void | Promise<void>)[]): () => Promise<void> {
  return async () => {
    let failure: unknown;
    for (const close of closers.splice(0).reverse()) await Promise.resolve(close()).catch((error: unknown) => (failure ??= error));
    if (failure !== undefined) throw failure;
  };
}

/**
 * The process scope `serve` runs in: the store (a Redis that is down does not stop startup: not ready),
 * the listeners' certificate, the audit sink, the key ring and admission control.
 */
export async function openProcessScope(config: BrokerConfig, options: ScopeOptions): Promise<ProcessScope> {
  const container = rootContainer.createChildContainer();
  const closers: (() => void | Promise<void>)[] = [];
  const log = options.logger ?? createLogger(config.log.level);
  const clock = options.clock ?? systemClock;
  const info = brokerInfoFor(config.issuer);
  const fetcher = new GuardedFetcher(config.network, options.resolver);
  closers.push(() => fetcher.close());
  const jwks = new RemoteJwksCache(fetcher, clock, log, { ...DEFAULT_JWKS_OPTIONS, ...options.jwks });
  // Lives as long as the process: keys that signed stay published across reloads until their tokens expire.
  const keyRing = new RotatingKeyRing(clock, log);
  const metrics = new PromMetrics();
  try {
    const store = options.store ?? (await openStateStore(config.store, { clock, log }));
    if (!options.store) closers.push(() => store.close());
    provideProcessServices(container, { clock, log, fetcher, jwks, keyRing, store, metrics, info }, options);
    const tls = config.listen.tls ? await openListenerTls(config.listen.tls, { baseDir: options.baseDir, log }) : undefined;
    if (tls) closers.push(() => tls.close());
    // Process-wide like the listeners: its chain must not fork across a reload.
    const auditSink = options.audit ? undefined : await openAuditSink(config.audit, options.baseDir, log, options.worker);
    if (auditSink) {
      const closeTimeoutMs = config.audit.closeTimeoutMs;
      closers.push(async () => {
        if (!(await auditSink.close(closeTimeoutMs))) throw new AuditSinkError(`records still unwritten after ${closeTimeoutMs} ms at shutdown`);
      });
    }
    provideValue(container, coreTokens.audit, options.audit ?? auditSink!);
    // One in-flight bound for the process: requests of a replaced config still hold their slots.
    const admit = admissionControl(config.limits.inFlight, metrics, log);
    closers.push(() => container.clearInstances());
    return { container, closers, log, info, keyRing, metrics, tls, auditSink, admit, lifecycle: { readiness: 'starting' }, close: closeAll(closers) };
  } catch (error) {
    // Startup failed after something opened: release it before reporting.
    await closeAll(closers)().catch(() => undefined);
    throw error;
  }
}

/** What a read-only command leaves unchecked because checking it would reach outside this machine. */
export interface Unchecked {
  readonly what: string;
  readonly why: string;
}

/** A fetcher for read-only commands: no request leaves the process, every one fails like an unreachable host. */
class OfflineFetcher implements HttpFetcher {
  async getJson(): Promise<unknown> {
    throw new UpstreamError('read-only command: no network');
  }
}

/**
 * An inert scope for read-only commands (`config validate`, `plugins list`, `policy explain`): the same
 * services, but a memory store, an audit sink in memory, no listener certificate, no keys generated and a
 * fetcher that never connects. What `serve` would open is checked without side effects where that is
 * possible (files read, directories looked at); what needs the network is returned as `unchecked`.
 */
export async function inertProcessScope(config: BrokerConfig, options: { baseDir: string; clock?: Clock }): Promise<{ scope: ProcessScope; problems: string[]; unchecked: Unchecked[] }> {
  const container = rootContainer.createChildContainer();
  const closers: (() => void | Promise<void>)[] = [];
  const clock = options.clock ?? systemClock;
  const log = silentLogger;
  const info = brokerInfoFor(config.issuer);
  const fetcher = new OfflineFetcher();
  // A plugin's warm-up fails at once through the offline fetcher; nothing waits on the network.
  const jwks = new RemoteJwksCache(fetcher, clock, log, DEFAULT_JWKS_OPTIONS);
  const keyRing = new RotatingKeyRing(clock, log);
  const metrics = new PromMetrics();
  const store = new MemoryStateStore(clock);
  closers.push(() => store.close());
  provideProcessServices(container, { clock, log, fetcher, jwks, keyRing, store, metrics, info }, {});
  provideValue(container, coreTokens.audit, new MemoryAuditSink());
  closers.push(() => container.clearInstances());
  const problems: string[] = [];
  const unchecked: Unchecked[] = [];
  if (config.store.kind === 'redis') unchecked.push({ what: 'store', why: 'the Redis server is not contacted (kill-switch entries are not consulted)' });
  const tls = config.listen.tls;
  if (tls && 'spiffe' in tls) unchecked.push({ what: 'listen.tls.spiffe', why: 'the Workload API is not contacted' });
  if (tls && 'certFile' in tls) {
    // Read and parsed exactly as serve does; the holder is closed at once (it would watch the files).
    const holder = await collectProblems(problems, () => openListenerTls(tls, { baseDir: options.baseDir, log }));
    holder?.close();
  }
  problems.push(...(await auditDestinationProblems(config, options.baseDir)));
  if (config.plugins.length > 0) unchecked.push({ what: 'plugins', why: 'remote services plugins use (issuers\' keys, SPIRE agent, cloud APIs) are not contacted' });
  const scope: ProcessScope = {
    container,
    closers,
    log,
    info,
    keyRing,
    metrics,
    tls: undefined,
    auditSink: undefined,
    admit: admissionControl(config.limits.inFlight, metrics, log),
    lifecycle: { readiness: 'starting' },
    close: closeAll(closers),
  };
  return { scope, problems, unchecked };
}

/** An audit file serve could not open: its directory is missing or not writable. Nothing is created. */
async function auditDestinationProblems(config: BrokerConfig, baseDir: string): Promise<string[]> {
  const destination = config.audit.destination;
  if (typeof destination === 'string') return [];
  const file = resolvePath(baseDir, auditFilePath(destination.file, 1));
  const dir = dirname(file);
  try {
    if (!(await stat(dir)).isDirectory()) return [`audit.destination.file: ${dir} is not a directory`];
    await access(dir, constants.W_OK);
  } catch (error) {
    const code = (error as { code?: string }).code;
    return [`audit.destination.file: the directory ${dir} ${code === 'ENOENT' ? 'does not exist' : 'is not writable'}`];
  }
  return [];
}
