import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { createLocalJWKSet, type JSONWebKeySet, type JWK, type JWTVerifyGetKey } from 'jose';
import type { JwksCache, Logger } from '@tessera/plugin-sdk';

const PUBLIC_KEY_TYPES = new Set(['RSA', 'EC', 'OKP']);
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];

/** Parses a JWKS document, keeping only public asymmetric signing keys. Throws with a reason otherwise. */
export function parseJwks(text: string): JSONWebKeySet {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch {
    throw new Error('not JSON');
  }
  const keys = (document as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) throw new Error('not a JWKS document (no "keys" array)');
  const usable: JWK[] = [];
  for (const key of keys as JWK[]) {
    if (typeof key !== 'object' || key === null || !PUBLIC_KEY_TYPES.has(key.kty ?? '')) continue;
    // A private key here means someone copied the wrong file; never keep signing material on the broker.
    if (PRIVATE_MEMBERS.some((member) => member in key)) throw new Error('contains private key material');
    if (key.use !== undefined && key.use !== 'sig') continue;
    usable.push(key);
  }
  if (usable.length === 0) throw new Error('no public signing keys');
  return { keys: usable };
}

/**
 * A cluster's JWKS loaded from disk, for issuers the broker cannot or should not reach. Presented to
 * `JwtVerifier` as its key source, so the verification path is the same as for a remote JWKS. The file's
 * directory is watched (an atomic rename or a ConfigMap swap is seen); a bad new version keeps the last
 * good key set.
 */
export class JwksFile implements JwksCache {
  #keys: JWTVerifyGetKey;
  #watcher: FSWatcher | undefined;
  #pending: NodeJS.Timeout | undefined;
  #closed = false;

  private constructor(
    private readonly path: string,
    keys: JSONWebKeySet,
    private readonly log: Logger,
  ) {
    this.#keys = createLocalJWKSet(keys);
  }

  /** Loads the file once; a missing or invalid file stops startup. */
  static async open(path: string, log: Logger): Promise<JwksFile> {
    const file = new JwksFile(path, parseJwks(await readFile(path, 'utf8')), log);
    file.#watch();
    return file;
  }

  /** The key resolver. Its argument is ignored: this source has exactly one key set. */
  remote(): JWTVerifyGetKey {
    return (header, token) => this.#keys(header, token);
  }

  warm(): Promise<boolean> {
    return Promise.resolve(true);
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#pending);
    this.#watcher?.close();
  }

  /** Re-reads the file now. Resolves false (and keeps the current keys) when the new version is unusable. */
  async reload(): Promise<boolean> {
    try {
      this.#keys = createLocalJWKSet(parseJwks(await readFile(this.path, 'utf8')));
      return true;
    } catch (error) {
      if (!this.#closed) this.log.warn({ path: this.path, err: String(error) }, 'Kubernetes JWKS file not reloaded; keeping the last good keys');
      return false;
    }
  }

  #watch(): void {
    try {
      this.#watcher = watch(dirname(this.path), { persistent: false }, (_event, name) => {
        if (name !== null && name !== basename(this.path) && !name.startsWith('..')) return;
        clearTimeout(this.#pending);
        this.#pending = setTimeout(() => void this.reload(), 50);
        this.#pending.unref();
      });
      this.#watcher.on('error', (error) => this.log.warn({ path: this.path, err: String(error) }, 'Kubernetes JWKS file watch failed'));
    } catch (error) {
      this.log.warn({ path: this.path, err: String(error) }, 'cannot watch the Kubernetes JWKS file; it will not be reloaded');
    }
  }
}
