import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { calculateJwkThumbprint, createLocalJWKSet, exportJWK, generateKeyPair, type JSONWebKeySet, type JWK, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { KeyRing, Logger, SignedToken } from '@tessera/plugin-sdk';
import { ConfigError } from '../config/errors.js';
import { signCompactJwt } from './compact-sign.js';
import { SIGNING_ALGORITHMS, type BrokerConfig } from '../config/schema.js';

type SigningAlgorithm = BrokerConfig['keys']['algorithm'];
type KeyFile = BrokerConfig['keys']['files'][number];
/** `keys` as loading needs it; `use` defaults to sign, as in the schema. */
export type KeyRingConfig = Pick<BrokerConfig['keys'], 'algorithm' | 'generate'> & { readonly files: readonly (Omit<KeyFile, 'use'> & { readonly use?: KeyFile['use'] })[] };

export interface SigningKey {
  readonly kid: string;
  readonly alg: SigningAlgorithm;
  /** `publish`: published for verification, never signs. */
  readonly use: 'sign' | 'publish';
  readonly privateKey: KeyObject;
  readonly publicJwk: JWK;
}

/** The key that signs among `keys`: the first with use sign. Throws the config error when there is none. */
export function signerOf(keys: readonly SigningKey[]): SigningKey {
  if (keys.length === 0) throw new ConfigError(['keys: no signing key; set keys.files, or keys.generate for development']);
  const signer = keys.find((key) => key.use === 'sign');
  if (!signer) throw new ConfigError(['keys.files: every key has use publish; one must sign']);
  return signer;
}

/** The broker's signing keys: the first with use sign signs, all are published for verification (so rotation overlaps). */
export class LocalKeyRing implements KeyRing {
  readonly #keys: readonly SigningKey[];
  readonly #signer: SigningKey;
  readonly #jwks: JSONWebKeySet;
  readonly #verifier: JWTVerifyGetKey;

  constructor(keys: readonly SigningKey[]) {
    this.#signer = signerOf(keys);
    this.#keys = keys;
    this.#jwks = { keys: keys.map((key) => key.publicJwk) };
    this.#verifier = createLocalJWKSet(this.#jwks);
  }

  get algorithms(): readonly string[] {
    return [...new Set(this.#keys.map((key) => key.alg))];
  }

  async sign(claims: JWTPayload, options: { readonly typ: string }): Promise<SignedToken> {
    const active = this.#signer;
    const token = signCompactJwt(claims, { alg: active.alg, kid: active.kid, typ: options.typ }, active.privateKey);
    return { token, kid: active.kid, alg: active.alg };
  }

  publicJwks(): JSONWebKeySet {
    return structuredClone(this.#jwks);
  }

  verifier(): JWTVerifyGetKey {
    return this.#verifier;
  }
}

/** Loads the configured key files, or on the embedded default generates one key once and keeps it under dataDir. */
export async function loadKeyRing(config: KeyRingConfig, options: { baseDir: string; dataDir: string; log: Logger }): Promise<LocalKeyRing> {
  return new LocalKeyRing(await loadSigningKeys(config, options));
}

/** The configured keys in config order (or the generated development key); every problem is a `ConfigError`. */
export async function loadSigningKeys(config: KeyRingConfig, options: { baseDir: string; dataDir: string; log: Logger }): Promise<SigningKey[]> {
  const keys: SigningKey[] = [];
  for (const [index, file] of config.files.entries()) {
    const path = resolve(options.baseDir, file.path);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch {
      throw new ConfigError([`keys.files[${index}].path: cannot read the key file`]);
    }
    try {
      const parsed = parsePrivateKey(text);
      // Config wins; otherwise a JWK file's own `alg` and `kid` are kept (as `tessera keys generate` writes them).
      keys.push(await toSigningKey(parsed.key, file.algorithm ?? parsed.alg, file.kid ?? parsed.kid, file.use ?? 'sign'));
    } catch (error) {
      throw new ConfigError([`keys.files[${index}]: ${error instanceof Error ? error.message : 'unusable key'}`]);
    }
  }
  if (keys.length === 0 && config.generate) keys.push(await generatedKey(config.algorithm, resolve(options.baseDir, options.dataDir), options.log));
  const kids = keys.map((key) => key.kid);
  const repeated = kids.find((kid, index) => kids.indexOf(kid) !== index);
  // Relying parties select keys by kid: two keys under one kid would verify by chance.
  if (repeated !== undefined) throw new ConfigError([`keys.files: kid "${repeated}" is used by two keys`]);
  signerOf(keys);
  return keys;
}

/** A new private key as a JWK (with `alg` and a thumbprint `kid`), for `tessera keys generate`. */
export async function generatePrivateJwk(alg: SigningAlgorithm): Promise<JWK> {
  const { privateKey } = await generateKeyPair(alg, { extractable: true, ...(alg === 'EdDSA' ? { crv: 'Ed25519' } : {}) });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, alg, kid: await calculateJwkThumbprint(jwk) };
}

async function generatedKey(alg: SigningAlgorithm, dataDir: string, log: Logger): Promise<SigningKey> {
  const path = resolve(dataDir, 'signing-key.jwk.json');
  let text: string | undefined;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw new ConfigError([`keys.generate: cannot read ${path}`]);
  }
  if (text === undefined) {
    const jwk = await generatePrivateJwk(alg);
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    // `wx`: never overwrite a key file, even one that appeared since the read.
    await writeFile(path, `${JSON.stringify(jwk, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
    await chmod(path, 0o600);
    log.warn({ keyFile: path }, 'generated a development signing key; configure keys.files for production');
    text = JSON.stringify(jwk);
  }
  // An existing but unusable key file is an operator problem to fix, not a reason to replace the key.
  try {
    const jwk = JSON.parse(text) as JWK;
    return await toSigningKey(createPrivateKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' }), jwk.alg as SigningAlgorithm | undefined, jwk.kid, 'sign');
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError([`keys.generate: ${path} exists but holds no usable private key`]);
  }
}

function parsePrivateKey(text: string): { key: KeyObject; alg?: SigningAlgorithm; kid?: string } {
  const trimmed = text.trim();
  if (trimmed.startsWith('{')) {
    const jwk = JSON.parse(trimmed) as JWK;
    if (typeof jwk.d !== 'string') throw new Error('JWK has no private part');
    const key = createPrivateKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
    const alg = (SIGNING_ALGORITHMS as readonly string[]).includes(jwk.alg ?? '') ? (jwk.alg as SigningAlgorithm) : undefined;
    if (jwk.alg !== undefined && alg === undefined) throw new Error(`JWK alg ${jwk.alg} is not a supported signing algorithm`);
    return { key, ...(alg ? { alg } : {}), ...(typeof jwk.kid === 'string' ? { kid: jwk.kid } : {}) };
  }
  return { key: createPrivateKey({ key: trimmed, format: 'pem' }) };
}

function inferAlgorithm(key: KeyObject): SigningAlgorithm {
  if (key.asymmetricKeyType === 'ed25519') return 'EdDSA';
  if (key.asymmetricKeyType === 'rsa') return 'RS256';
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return 'ES256';
    if (curve === 'secp384r1') return 'ES384';
  }
  throw new Error(`unsupported key type ${key.asymmetricKeyType ?? 'unknown'}`);
}

async function toSigningKey(privateKey: KeyObject, alg: SigningAlgorithm | undefined, kid: string | undefined, use: SigningKey['use']): Promise<SigningKey> {
  if (privateKey.type !== 'private') throw new Error('not a private key');
  const algorithm = alg ?? inferAlgorithm(privateKey);
  if (algorithm !== inferAlgorithm(privateKey) && !(algorithm === 'PS256' && privateKey.asymmetricKeyType === 'rsa')) {
    throw new Error(`algorithm ${algorithm} does not fit a ${privateKey.asymmetricKeyType} key`);
  }
  // jose refuses to sign RS*/PS* with a modulus under 2048 bits (RFC 7518 §3.3); catch it at startup,
  // not as a server_error on every issuance.
  const modulusLength = privateKey.asymmetricKeyDetails?.modulusLength;
  if (privateKey.asymmetricKeyType === 'rsa' && (modulusLength === undefined || modulusLength < 2048)) {
    throw new Error(`RSA key of ${modulusLength ?? 'unknown'} bits is too small (2048 at least)`);
  }
  const publicJwk = await exportJWK(createPublicKey(privateKey));
  const keyId = kid ?? (await calculateJwkThumbprint(publicJwk));
  return { kid: keyId, alg: algorithm, use, privateKey, publicJwk: { ...publicJwk, kid: keyId, alg: algorithm, use: 'sig' } };
}
