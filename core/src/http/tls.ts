import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { unwatchFile, watchFile } from 'node:fs';
import { resolve } from 'node:path';
import { createSecureContext, type Server as TlsServer, type TlsOptions } from 'node:tls';
import type { Logger } from '@tessera/plugin-sdk';
import { ConfigError } from '../config/errors.js';
import type { BrokerConfig } from '../config/schema.js';

export type ListenTlsConfig = NonNullable<BrokerConfig['listen']['tls']>;

/** How often the PEM files are stat'ed: a swapped symlink (a Kubernetes Secret volume) changes no watched inode. */
const PEM_POLL_MS = 1_000;
/** Writers replace a certificate and its key in two steps: read both once they have settled. */
const PEM_SETTLE_MS = 250;

/** A certificate the listener serves. */
interface Served {
  readonly cert: string;
  readonly key: string;
  /** SHA-256 of the leaf, as `openssl x509 -fingerprint -sha256` prints it. */
  readonly fingerprint: string;
  readonly serial: string;
  readonly notAfter: Date;
}

/**
 * The certificate of the broker's HTTPS listeners, from PEM files or the Workload API. Each change is checked
 * (leaf matches key, not expired, OpenSSL accepts it) before it replaces the current one, on every attached
 * server at once: new connections get it, open ones keep theirs. A refused change is logged and the old kept.
 */
export interface ListenerTls {
  /** `https.createServer` options: the current certificate (none yet while the first SVID is awaited). */
  serverOptions(): TlsOptions;
  attach(server: TlsServer): void;
  /** For `/readyz`: why no valid certificate is served, or undefined. */
  readiness(): string | undefined;
  close(): void;
}

/** Loads (PEM) or starts fetching (SPIFFE) the listener certificate; config problems are a `ConfigError`. */
export async function openListenerTls(config: ListenTlsConfig, options: { baseDir: string; log: Logger }): Promise<ListenerTls> {
  const holder = new CertificateHolder(config.handshakeTimeoutMs, options.log);
  if ('certFile' in config) await watchPemFiles(holder, config, options);
  else await watchX509Svid(holder, config.spiffe, options.log);
  return holder;
}

class CertificateHolder implements ListenerTls {
  readonly closers: (() => void)[] = [];
  waitingFor = 'no certificate yet';
  #current: Served | undefined;
  readonly #servers = new Set<TlsServer>();

  constructor(
    private readonly handshakeTimeoutMs: number,
    readonly log: Logger,
  ) {}

  get current(): Served | undefined {
    return this.#current;
  }

  serverOptions(): TlsOptions {
    const served = this.#current;
    return { handshakeTimeout: this.handshakeTimeoutMs, ...(served ? { cert: served.cert, key: served.key } : {}) };
  }

  attach(server: TlsServer): void {
    this.#servers.add(server);
    server.once('close', () => this.#servers.delete(server));
  }

  readiness(): string | undefined {
    const served = this.#current;
    if (!served) return this.waitingFor;
    return served.notAfter.getTime() <= Date.now() ? 'certificate expired' : undefined;
  }

  /** Throws a short reason when the pair is unusable; the served certificate is then unchanged. */
  install(chainPem: string, keyPem: string): Served {
    const leaf = parseLeaf(chainPem);
    let key;
    try {
      key = createPrivateKey(keyPem);
    } catch {
      throw new Error('the key is not a PEM private key');
    }
    if (!leaf.checkPrivateKey(key)) throw new Error('the key does not match the certificate');
    const notAfter = new Date(leaf.validTo);
    if (notAfter.getTime() <= Date.now()) throw new Error('the certificate has expired');
    const material = { cert: chainPem, key: keyPem };
    try {
      createSecureContext(material);
    } catch (error) {
      throw new Error(`OpenSSL refused the pair (${(error as { code?: string }).code ?? 'invalid'})`);
    }
    const served: Served = { ...material, fingerprint: leaf.fingerprint256, serial: leaf.serialNumber, notAfter };
    this.#current = served;
    for (const server of this.#servers) server.setSecureContext(material);
    return served;
  }

  close(): void {
    for (const close of this.closers.splice(0)) close();
  }
}

function parseLeaf(chainPem: string): X509Certificate {
  try {
    return new X509Certificate(chainPem);
  } catch {
    throw new Error('the certificate is not PEM');
  }
}

async function watchPemFiles(holder: CertificateHolder, config: Extract<ListenTlsConfig, { certFile: string }>, options: { baseDir: string; log: Logger }): Promise<void> {
  const files = { certFile: config.certFile, keyFile: config.keyFile, ...(config.caFile ? { caFile: config.caFile } : {}) };
  const paths = Object.fromEntries(Object.entries(files).map(([name, path]) => [name, resolve(options.baseDir, path)])) as Record<keyof typeof files, string>;
  const read = async () => {
    const entries = await Promise.all(
      Object.entries(paths).map(async ([name, path]) => {
        try {
          return [name, await readFile(path, 'utf8')] as const;
        } catch {
          throw new Error(`listen.tls.${name}: cannot be read`);
        }
      }),
    );
    const text = Object.fromEntries(entries) as Record<string, string>;
    // Intermediates after the leaf: the chain the client needs to reach its trust anchor.
    const cert = text.certFile!;
    return { chain: text.caFile ? `${cert.trimEnd()}\n${text.caFile}` : cert, key: text.keyFile! };
  };
  const digest = (pair: { chain: string; key: string }) => createHash('sha256').update(pair.chain).update('\0').update(pair.key).digest('hex');

  let pair;
  try {
    pair = await read();
    holder.install(pair.chain, pair.key);
  } catch (error) {
    throw new ConfigError([(error as Error).message.startsWith('listen.tls.') ? (error as Error).message : `listen.tls: ${(error as Error).message}`]);
  }
  let loaded = digest(pair);
  let settle: NodeJS.Timeout | undefined;
  const reload = async () => {
    try {
      const next = await read();
      const seen = digest(next);
      if (seen === loaded) return;
      loaded = seen;
      const served = holder.install(next.chain, next.key);
      holder.log.info({ fingerprint: served.fingerprint, notAfter: served.notAfter.toISOString() }, 'tls: certificate reloaded from the PEM files, new connections get it');
    } catch (error) {
      holder.log.warn({ reason: (error as Error).message }, 'tls: the changed PEM files were refused, the current certificate is kept');
    }
  };
  const changed = () => {
    clearTimeout(settle);
    settle = setTimeout(() => void reload(), PEM_SETTLE_MS).unref();
  };
  for (const path of Object.values(paths)) {
    watchFile(path, { interval: PEM_POLL_MS, persistent: false }, changed);
    holder.closers.push(() => unwatchFile(path, changed));
  }
  holder.closers.push(() => clearTimeout(settle));
}

/** What core needs of `@tessera/spiffe`, loaded only for `listen.tls.spiffe` so core carries no gRPC. */
interface SpiffePackage {
  WorkloadApiClient: new (address?: string) => {
    watchX509Svids(
      onUpdate: (context: { svids: readonly { spiffeId: string; certChainDer: readonly Buffer[]; keyPkcs8Der: Buffer }[] }) => void,
      onError?: (error: Error, info: { next: string; delayMs?: number }) => void,
    ): { close(): void };
    close(): void;
  };
}

async function watchX509Svid(holder: CertificateHolder, config: Extract<ListenTlsConfig, { spiffe: unknown }>['spiffe'], log: Logger): Promise<void> {
  const specifier = '@tessera/spiffe';
  let spiffe: SpiffePackage;
  try {
    spiffe = (await import(specifier)) as SpiffePackage;
  } catch {
    throw new ConfigError(['listen.tls.spiffe: needs the @tessera/spiffe package (npm install @tessera/spiffe)']);
  }
  let client;
  try {
    client = new spiffe.WorkloadApiClient(config.socket);
  } catch (error) {
    throw new ConfigError([`listen.tls.spiffe.socket: ${(error as Error).message} (set it or SPIFFE_ENDPOINT_SOCKET)`]);
  }
  holder.waitingFor = 'waiting for the first X.509-SVID from the Workload API';
  const watcher = client.watchX509Svids(
    (context) => {
      const svid = config.spiffeId === undefined ? context.svids[0] : context.svids.find((candidate) => candidate.spiffeId === config.spiffeId);
      if (!svid) {
        log.warn({ spiffeId: config.spiffeId, offered: context.svids.length }, 'tls: the Workload API update holds no X.509-SVID to serve, the current certificate is kept');
        return;
      }
      const chain = svid.certChainDer.map((der) => new X509Certificate(der).toString()).join('');
      const key = createPrivateKey({ key: svid.keyPkcs8Der, format: 'der', type: 'pkcs8' }).export({ type: 'pkcs8', format: 'pem' }) as string;
      if (holder.current?.cert === chain) return;
      try {
        const served = holder.install(chain, key);
        log.info({ spiffeId: svid.spiffeId, serial: served.serial, notAfter: served.notAfter.toISOString() }, 'tls: X.509-SVID installed, new connections get it');
      } catch (error) {
        log.warn({ spiffeId: svid.spiffeId, reason: (error as Error).message }, 'tls: the X.509-SVID was refused, the current certificate is kept');
      }
    },
    (error, info) => log.warn({ error: error.message, next: info.next, delayMs: info.delayMs }, 'tls: Workload API X.509-SVID stream failed'),
  );
  holder.closers.push(() => {
    watcher.close();
    client.close();
  });
}
