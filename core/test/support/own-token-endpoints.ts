import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Clock, JwksCache } from '@tessera/plugin-sdk';
import { validateConfig } from '../../src/config/load.js';
import { generatePrivateJwk, loadKeyRing, type LocalKeyRing } from '../../src/keys/key-ring.js';
import { silentLogger } from '../../src/logging.js';
import { ClientAuthenticator } from '../../src/oauth/client-auth.js';
import { hashClientSecret } from '../../src/oauth/client-secret.js';
import { InMemoryReplayStore } from '../../src/oauth/replay-store.js';

/** Shared by the revocation and introspection unit tests: both answer about the broker's own tokens. */
export const ISSUER = 'https://broker.example';
export const SECRET = 'correct horse battery staple';
export const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

/** A key ring with one fresh ES256 key, loaded the way the broker loads key files. */
export async function testKeyRing(): Promise<LocalKeyRing> {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-own-tokens-'));
  await writeFile(join(dir, 'key.jwk'), JSON.stringify(await generatePrivateJwk('ES256')));
  return loadKeyRing({ algorithm: 'ES256', files: [{ path: 'key.jwk' }], generate: false }, { baseDir: dir, dataDir: '.', log: silentLogger });
}

/** An authenticator for clients given as id → method; secret clients share SECRET. */
export async function secretClientAuthenticator(clients: Readonly<Record<string, 'client_secret_basic' | 'client_secret_post' | 'none'>>, clock: Clock): Promise<ClientAuthenticator> {
  const secretHash = await hashClientSecret(SECRET);
  const config = validateConfig({
    issuer: ISSUER,
    clients: Object.entries(clients).map(([id, method]) => ({ id, auth: method === 'none' ? { method } : { method, secretHash } })),
  });
  // Secret clients never fetch keys: a JWKS cache that refuses is enough.
  const jwks: JwksCache = {
    remote: () => () => Promise.reject(new Error('no remote keys in this test')),
    warm: async () => false,
  };
  return new ClientAuthenticator(config.clients, config.clientAuth, { jwks, replay: new InMemoryReplayStore(clock), clock, broker: { issuer: ISSUER, tokenEndpoint: `${ISSUER}/token` } });
}
