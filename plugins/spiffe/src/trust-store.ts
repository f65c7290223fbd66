import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { createLocalJWKSet, type JWTVerifyGetKey } from 'jose';
import type { HttpFetcher, Logger } from '@tessera/plugin-sdk';
import { parseSpiffeBundle, WorkloadApiClient, type JwtBundle, type Watcher } from '@tessera/spiffe';

/** The JWT keys of one trust domain, ready for jose. */
export interface TrustedBundle {
  readonly trustDomain: string;
  readonly keys: JWTVerifyGetKey;
  readonly keyCount: number;
  readonly updatedAt: Date;
}

/**
 * The JWT bundles of the trusted trust domains, kept current by their sources. Only configured trust
 * domains are ever stored, whatever a source offers; an update replaces a domain's keys whole.
 */
export class TrustStore {
  readonly #bundles = new Map<string, TrustedBundle>();
  readonly #firstLoads = new Map<string, Promise<void>>();

  constructor(
    readonly trustDomains: ReadonlySet<string>,
    private readonly log: Logger,
  ) {}

  get(trustDomain: string): TrustedBundle | undefined {
    return this.#bundles.get(trustDomain);
  }

  /** Records the first load attempt of a domain's source, so early tokens can wait for it. */
  loading(trustDomain: string, attempt: Promise<void>): void {
    this.#firstLoads.set(trustDomain, attempt);
  }

  /**
   * The domain's bundle; while its source's first attempt is still running, waits for it (bounded by
   * `signal`) instead of refusing the first tokens after startup.
   */
  async await(trustDomain: string, signal: AbortSignal): Promise<TrustedBundle | undefined> {
    const bundle = this.#bundles.get(trustDomain);
    const first = this.#firstLoads.get(trustDomain);
    if (bundle || !first) return bundle;
    const aborted = new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    await Promise.race([first, aborted]);
    return this.#bundles.get(trustDomain);
  }

  set(bundle: JwtBundle, source: string): void {
    if (!this.trustDomains.has(bundle.trustDomain)) return;
    const previous = this.#bundles.get(bundle.trustDomain);
    this.#bundles.set(bundle.trustDomain, {
      trustDomain: bundle.trustDomain,
      // `use: jwt-svid` is SPIFFE's marker; jose only picks keys whose `use` is absent or `sig`.
      keys: createLocalJWKSet({ keys: bundle.keys.map(({ use: _use, ...key }) => key) }),
      keyCount: bundle.keys.length,
      updatedAt: new Date(),
    });
    if (!previous) this.log.info({ trustDomain: bundle.trustDomain, source, keys: bundle.keys.length }, 'SPIFFE bundle loaded');
  }

  /** A source says the domain has no bundle any more (the Workload API streams full state). */
  remove(trustDomain: string, source: string): void {
    if (this.#bundles.delete(trustDomain)) this.log.warn({ trustDomain, source }, 'SPIFFE bundle withdrawn by its source');
  }
}

/** Something that keeps some trust domains' bundles current. */
export interface BundleSource {
  /** Resolves after the first load attempt (success or not). */
  readonly ready: Promise<void>;
  close(): void;
}

/**
 * Bundles streamed by the Workload API (`FetchJWTBundles`): every message is the complete set, so a
 * domain missing from it has been removed. The client reconnects with backoff by itself.
 */
export function workloadApiSource(address: string | undefined, trustDomains: readonly string[], store: TrustStore, log: Logger): BundleSource {
  const client = new WorkloadApiClient(address);
  let first: () => void;
  const ready = new Promise<void>((resolve) => (first = resolve));
  const watcher: Watcher = client.watchJwtBundles(
    (bundles) => {
      for (const trustDomain of trustDomains) {
        const bundle = bundles.get(trustDomain);
        if (bundle) store.set(bundle, 'workload-api');
        else store.remove(trustDomain, 'workload-api');
      }
      first();
    },
    (error, info) => {
      log.warn({ source: 'workload-api', code: error.code, next: info.next }, 'SPIFFE Workload API bundle stream problem');
      if (info.next !== 'continue') first();
    },
  );
  return {
    ready,
    close() {
      watcher.close();
      client.close();
    },
  };
}

/**
 * A SPIFFE bundle document on disk, reloaded when the file changes (directory watch, so an atomic
 * rename or a Kubernetes ConfigMap swap is seen too). A bad new version keeps the last good one.
 */
export function fileSource(path: string, trustDomain: string, store: TrustStore, log: Logger): BundleSource {
  let closed = false;
  const load = async () => {
    try {
      store.set(parseSpiffeBundle(trustDomain, await readFile(path)), 'file');
    } catch (error) {
      if (!closed) log.warn({ source: 'file', trustDomain, path, err: String(error) }, 'SPIFFE bundle file not loaded; keeping the last good bundle');
    }
  };
  let watcher: FSWatcher | undefined;
  let pending: NodeJS.Timeout | undefined;
  try {
    watcher = watch(dirname(path), { persistent: false }, (_event, name) => {
      if (name !== null && name !== basename(path) && !name.startsWith('..')) return;
      clearTimeout(pending);
      pending = setTimeout(() => void load(), 50);
      pending.unref();
    });
    watcher.on('error', (error) => log.warn({ source: 'file', path, err: String(error) }, 'SPIFFE bundle file watch failed'));
  } catch (error) {
    log.warn({ source: 'file', path, err: String(error) }, 'cannot watch the SPIFFE bundle file; it will not be reloaded');
  }
  return {
    ready: load(),
    close() {
      closed = true;
      clearTimeout(pending);
      watcher?.close();
    },
  };
}

export interface EndpointSourceOptions {
  /** Refresh period when the bundle gives no `spiffe_refresh_hint`. */
  readonly refreshSeconds: number;
}

const MIN_REFRESH_MS = 5_000;
const MAX_REFRESH_MS = 3_600_000;

/**
 * A SPIFFE bundle endpoint (https_web profile): fetched through the broker's guarded fetcher, refreshed
 * on the bundle's own `spiffe_refresh_hint` (bounded 5 s – 1 h), retried with backoff after failures.
 */
export function endpointSource(url: string, trustDomain: string, store: TrustStore, http: HttpFetcher, log: Logger, options: EndpointSourceOptions): BundleSource {
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let failures = 0;
  const schedule = (delayMs: number) => {
    if (closed) return;
    timer = setTimeout(() => void refresh(), Math.min(Math.max(delayMs, MIN_REFRESH_MS), MAX_REFRESH_MS));
    timer.unref();
  };
  const refresh = async (): Promise<void> => {
    try {
      const bundle = parseSpiffeBundle(trustDomain, JSON.stringify(await http.getJson(url)));
      store.set(bundle, 'endpoint');
      failures = 0;
      schedule((bundle.refreshHintSeconds ?? options.refreshSeconds) * 1000);
    } catch (error) {
      failures += 1;
      if (!closed) log.warn({ source: 'endpoint', trustDomain, url: new URL(url).origin, failures, err: String(error) }, 'SPIFFE bundle endpoint fetch failed; keeping the last good bundle');
      schedule(Math.min(MIN_REFRESH_MS * 2 ** (failures - 1), options.refreshSeconds * 1000));
    }
  };
  return {
    ready: refresh(),
    close() {
      closed = true;
      clearTimeout(timer);
    },
  };
}
