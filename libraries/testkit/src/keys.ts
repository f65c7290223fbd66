import { readFile, mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from 'jose';

export interface TestKey {
  readonly kid: string;
  readonly alg: string;
  readonly privateKey: CryptoKey;
  /** Public JWK with `kid`, `alg`, `use`. */
  readonly publicJwk: JWK;
  readonly privateJwk: JWK;
}

/** A fresh asymmetric signing key with a thumbprint kid. */
export async function generateTestKey(alg = 'ES256', kid?: string): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true, ...(alg === 'EdDSA' ? { crv: 'Ed25519' } : {}) });
  const publicJwk = await exportJWK(publicKey);
  const keyId = kid ?? (await calculateJwkThumbprint(publicJwk));
  const privateJwk = { ...(await exportJWK(privateKey)), kid: keyId, alg };
  return { kid: keyId, alg, privateKey, publicJwk: { ...publicJwk, kid: keyId, alg, use: 'sig' }, privateJwk };
}

/** Loads a key kept in `path`, or generates and keeps one (so restarts reuse the same kid). */
export async function persistentTestKey(path: string, alg = 'ES256'): Promise<TestKey> {
  try {
    const privateJwk = JSON.parse(await readFile(path, 'utf8')) as JWK;
    const privateKey = (await importJWK(privateJwk, privateJwk.alg)) as CryptoKey;
    const { d: _d, ...publicPart } = privateJwk;
    return { kid: privateJwk.kid!, alg: privateJwk.alg!, privateKey, publicJwk: { ...publicPart, use: 'sig' }, privateJwk };
  } catch {
    const key = await generateTestKey(alg);
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    await writeFile(path, JSON.stringify(key.privateJwk), { mode: 0o600 });
    return key;
  }
}
