import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { calculateJwkThumbprint, createLocalJWKSet, decodeProtectedHeader, exportJWK, jwtVerify, type JWK } from 'jose';
import { ConfigError } from '../src/config/errors.js';
import { SIGNING_ALGORITHMS } from '../src/config/schema.js';
import { loadKeyRing, type KeyRingConfig, type LocalKeyRing } from '../src/keys/key-ring.js';
import { silentLogger } from '../src/logging.js';

type KeysConfig = KeyRingConfig;
type KeyFile = KeysConfig['files'][number];

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tessera-keys-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function load(keys: Partial<KeysConfig>): Promise<LocalKeyRing> {
  return loadKeyRing({ algorithm: 'ES256', files: [], generate: false, ...keys }, { baseDir: dir, dataDir: 'data', log: silentLogger });
}

async function configError(keys: Partial<KeysConfig>): Promise<ConfigError> {
  const error = await load(keys).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(ConfigError);
  return error as ConfigError;
}

function ecKey(namedCurve = 'P-256'): KeyObject {
  return generateKeyPairSync('ec', { namedCurve }).privateKey;
}

function rsaKey(): KeyObject {
  return generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
}

async function writePem(name: string, key: KeyObject): Promise<string> {
  await writeFile(join(dir, name), key.export({ type: 'pkcs8', format: 'pem' }));
  return name;
}

async function writeJwk(name: string, jwk: object): Promise<string> {
  await writeFile(join(dir, name), JSON.stringify(jwk));
  return name;
}

async function expectVerifies(ring: LocalKeyRing, typ = 'at+jwt') {
  const signed = await ring.sign({ sub: 'workload', aud: 'https://api.example' }, { typ });
  const verified = await jwtVerify(signed.token, createLocalJWKSet(ring.publicJwks()), { typ, audience: 'https://api.example' });
  expect(verified.payload.sub).toBe('workload');
  expect(verified.protectedHeader).toEqual({ alg: signed.alg, kid: signed.kid, typ });
  // The ring's own resolver verifies what it signed too.
  await expect(jwtVerify(signed.token, ring.verifier())).resolves.toBeDefined();
  return signed;
}

function expectPublicOnly(ring: LocalKeyRing) {
  const { keys } = ring.publicJwks();
  expect(keys.length).toBeGreaterThan(0);
  for (const key of keys) {
    for (const member of PRIVATE_MEMBERS) expect(key).not.toHaveProperty(member);
    expect(key).toMatchObject({ use: 'sig', kid: expect.any(String), alg: expect.any(String) });
  }
}

describe('loadKeyRing', () => {
  it.each([
    ['not JSON', 'garbage'],
    ['JSON without a private key', '{"kty":"EC"}'],
  ])('never replaces an existing generated key file that is unusable (%s)', async (_case, content) => {
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(dir, 'data'), { recursive: true });
    const path = join(dir, 'data', 'signing-key.jwk.json');
    await writeFile(path, content);
    const error = await configError({ generate: true });
    expect(error.message).toContain('exists but holds no usable private key');
    expect(await readFile(path, 'utf8')).toBe(content);
  });

  describe('generate', () => {
    it('writes a 0600 key file under dataDir and reuses it', async () => {
      const first = await load({ generate: true });
      const path = join(dir, 'data', 'signing-key.jwk.json');
      expect((await stat(path)).mode & 0o777).toBe(0o600);
      expect((await stat(join(dir, 'data'))).mode & 0o077).toBe(0);
      const stored = JSON.parse(await readFile(path, 'utf8')) as JWK;
      expect(stored).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', d: expect.any(String) });

      const second = await load({ generate: true });
      const [kid] = first.publicJwks().keys.map((key) => key.kid);
      expect(kid).toBe(stored.kid);
      expect(second.publicJwks()).toEqual(first.publicJwks());
      const signed = await second.sign({ sub: 'x' }, { typ: 'JWT' });
      expect(signed.kid).toBe(kid);
      await expect(jwtVerify(signed.token, first.verifier())).resolves.toBeDefined();
      expectPublicOnly(second);
    });

    it.each(SIGNING_ALGORITHMS)('generates a working %s key', async (algorithm) => {
      const ring = await load({ generate: true, algorithm });
      expect(ring.algorithms).toEqual([algorithm]);
      const signed = await expectVerifies(ring);
      expect(signed.alg).toBe(algorithm);
      expectPublicOnly(ring);
    });

    it('does not generate when key files are given', async () => {
      const ring = await load({ generate: true, files: [{ path: await writePem('key.pem', ecKey()) }] });
      expect(ring.publicJwks().keys).toHaveLength(1);
      await expect(stat(join(dir, 'data'))).rejects.toMatchObject({ code: 'ENOENT' });
    });
  });

  describe('key files', () => {
    it('loads a PKCS#8 PEM file, inferring the algorithm and a thumbprint kid', async () => {
      const key = ecKey();
      const ring = await load({ files: [{ path: await writePem('ec.pem', key) }] });
      const publicJwk = await exportJWK(key);
      const thumbprint = await calculateJwkThumbprint({ kty: 'EC', crv: publicJwk.crv, x: publicJwk.x, y: publicJwk.y } as JWK);
      expect(ring.algorithms).toEqual(['ES256']);
      expect(ring.publicJwks().keys).toEqual([
        { kty: 'EC', crv: 'P-256', x: publicJwk.x, y: publicJwk.y, kid: thumbprint, alg: 'ES256', use: 'sig' },
      ]);
      await expectVerifies(ring);
    });

    it("keeps a JWK file's own alg and kid (what `tessera keys generate --alg PS256` writes)", async () => {
      const { generatePrivateJwk } = await import('../src/keys/key-ring.js');
      const jwk = await generatePrivateJwk('PS256');
      const ring = await load({ files: [{ path: await writeJwk('ps.jwk.json', jwk) }] });
      expect(ring.publicJwks().keys[0]).toMatchObject({ alg: 'PS256', kid: jwk.kid });
      expect(ring.algorithms).toEqual(['PS256']);
      await expectVerifies(ring);
    });

    it('loads a private JWK file with a configured kid', async () => {
      const jwk = ecKey('P-384').export({ format: 'jwk' });
      const ring = await load({ files: [{ path: await writeJwk('key.jwk.json', jwk), kid: 'broker-2030' }] });
      expect(ring.algorithms).toEqual(['ES384']);
      const signed = await expectVerifies(ring);
      expect(signed.kid).toBe('broker-2030');
      expectPublicOnly(ring);
    });

    it.each<[string, () => KeyObject, KeyFile['algorithm'], string]>([
      ['RSA', rsaKey, undefined, 'RS256'],
      ['RSA', rsaKey, 'PS256', 'PS256'],
      ['Ed25519', () => generateKeyPairSync('ed25519').privateKey, undefined, 'EdDSA'],
      ['P-384', () => ecKey('P-384'), 'ES384', 'ES384'],
    ])('loads a %s key as %s → %s', async (_type, make, algorithm, expected) => {
      const ring = await load({ files: [{ path: await writePem('key.pem', make()), algorithm }] });
      expect(ring.algorithms).toEqual([expected]);
      expect((await expectVerifies(ring)).alg).toBe(expected);
      expectPublicOnly(ring);
    });

    it('resolves key paths against baseDir', async () => {
      const ring = await load({ files: [{ path: join(dir, await writePem('absolute.pem', ecKey())) }] });
      expect(ring.publicJwks().keys).toHaveLength(1);
    });

    it('signs with the first key and publishes all of them', async () => {
      const ring = await load({
        files: [
          { path: await writePem('new.pem', ecKey()), kid: 'new' },
          { path: await writePem('old.pem', rsaKey()), kid: 'old' },
        ],
      });
      expect(ring.publicJwks().keys.map((key) => key.kid)).toEqual(['new', 'old']);
      expect(ring.algorithms).toEqual(['ES256', 'RS256']);
      const signed = await expectVerifies(ring);
      expect(decodeProtectedHeader(signed.token).kid).toBe('new');
      expectPublicOnly(ring);
    });

    it('never signs with a use: publish key, though it is listed first and published', async () => {
      const ring = await load({
        files: [
          { path: await writePem('staged.pem', ecKey()), kid: 'staged', use: 'publish' },
          { path: await writePem('current.pem', ecKey()), kid: 'current' },
        ],
      });
      expect(ring.publicJwks().keys.map((key) => key.kid)).toEqual(['staged', 'current']);
      expect(decodeProtectedHeader((await expectVerifies(ring)).token).kid).toBe('current');
    });

    it('hands out copies of the published JWKS', async () => {
      const ring = await load({ files: [{ path: await writePem('key.pem', ecKey()) }] });
      const published = ring.publicJwks();
      published.keys[0]!.kid = 'tampered';
      published.keys.push({ kty: 'oct', k: 'AAAA' });
      expect(ring.publicJwks().keys).toHaveLength(1);
      expect(ring.publicJwks().keys[0]!.kid).not.toBe('tampered');
    });
  });

  describe('refusals', () => {
    it('refuses keys that all have use publish, and two keys under one kid', async () => {
      const onlyPublished = await configError({ files: [{ path: await writePem('a.pem', ecKey()), use: 'publish' }] });
      expect(onlyPublished.problems).toEqual(['keys.files: every key has use publish; one must sign']);
      const twice = await configError({ files: [{ path: await writePem('b.pem', ecKey()), kid: 'k' }, { path: await writePem('c.pem', ecKey()), kid: 'k' }] });
      expect(twice.problems).toEqual(['keys.files: kid "k" is used by two keys']);
    });

    it('refuses to start without keys when generate is off', async () => {
      const error = await configError({ generate: false });
      expect(error.message).toContain('no signing key');
    });

    it.each<[string, () => KeyObject, KeyFile['algorithm']]>([
      ['an EC key as RS256', () => ecKey(), 'RS256'],
      ['a P-256 key as ES384', () => ecKey(), 'ES384'],
      ['an RSA key as ES256', rsaKey, 'ES256'],
      ['an RSA key as EdDSA', rsaKey, 'EdDSA'],
      ['an Ed25519 key as ES256', () => generateKeyPairSync('ed25519').privateKey, 'ES256'],
    ])('refuses %s', async (_label, make, algorithm) => {
      const error = await configError({ files: [{ path: await writePem('key.pem', make()), algorithm }] });
      expect(error.message).toMatch(/^keys\.files\[0\]: algorithm \S+ does not fit/);
    });

    it('refuses an RSA key too small to sign with', async () => {
      const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
      const error = await configError({ files: [{ path: await writePem('small.pem', small) }] });
      expect(error.message).toBe('keys.files[0]: RSA key of 1024 bits is too small (2048 at least)');
    });

    it('refuses an unsupported key type', async () => {
      const error = await configError({ files: [{ path: await writePem('p521.pem', ecKey('P-521')) }] });
      expect(error.message).toContain('keys.files[0]: unsupported key type');
    });

    it('refuses a public JWK', async () => {
      const publicJwk = await exportJWK(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey);
      const error = await configError({ files: [{ path: await writeJwk('public.jwk.json', publicJwk) }] });
      expect(error.message).toBe('keys.files[0]: JWK has no private part');
    });

    it('refuses a public PEM', async () => {
      const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      await writeFile(join(dir, 'public.pem'), publicKey.export({ type: 'spki', format: 'pem' }));
      await configError({ files: [{ path: 'public.pem' }] });
    });

    it('names the file that is missing or unreadable', async () => {
      const good = await writePem('good.pem', ecKey());
      const error = await configError({ files: [{ path: good }, { path: 'missing.pem' }] });
      expect(error.message).toBe('keys.files[1].path: cannot read the key file');
    });

    it('refuses a file that is not a key, without echoing it', async () => {
      await writeFile(join(dir, 'garbage.pem'), 'super-secret-not-a-key');
      const error = await configError({ files: [{ path: 'garbage.pem' }] });
      expect(error.message).toMatch(/^keys\.files\[0\]: /);
      expect(error.message).not.toContain('super-secret');
    });
  });
});
