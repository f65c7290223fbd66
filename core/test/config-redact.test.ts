import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parse } from 'yaml';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { loadConfigFiles } from '../src/config/load.js';
import { printableConfig, renderConfig } from '../src/config/print.js';
import { REDACTED, redactPaths, redactSecrets } from '../src/config/redact.js';
import { brokerConfigSchema } from '../src/config/schema.js';

const HASH = '$scrypt$N=16384,r=8,p=1$c2FsdA$aGFzaA';
const secret = () => z.string().meta({ secret: true });

describe('redactSecrets', () => {
  it('redacts secretHash in the broker schema, in whichever client auth branch it appears', () => {
    const written = {
      issuer: 'https://broker.example',
      clients: [
        { id: 'a', auth: { method: 'client_secret_basic', secretHash: HASH } },
        { id: 'b', auth: { method: 'client_secret_post', secretHash: HASH }, grantTypes: ['token_exchange'] },
        { id: 'c', auth: { method: 'private_key_jwt', jwksUri: 'https://c.example/jwks' } },
      ],
    };
    expect(redactSecrets(written, brokerConfigSchema)).toEqual({
      issuer: 'https://broker.example',
      clients: [
        { id: 'a', auth: { method: 'client_secret_basic', secretHash: REDACTED } },
        { id: 'b', auth: { method: 'client_secret_post', secretHash: REDACTED }, grantTypes: ['token_exchange'] },
        { id: 'c', auth: { method: 'private_key_jwt', jwksUri: 'https://c.example/jwks' } },
      ],
    });
    expect(written.clients[0]!.auth.secretHash).toBe(HASH);
  });

  const pluginSchema = z
    .object({
      upstreams: z
        .array(
          z.object({
            url: z.string(),
            credentials: z.object({ clientId: z.string(), clientSecret: secret() }).strict().optional(),
          }),
        )
        .default([]),
      auth: z.discriminatedUnion('kind', [
        z.object({ kind: z.literal('basic'), user: z.string(), password: secret().describe('described after meta') }),
        z.object({ kind: z.literal('token'), token: z.string().meta({ secret: true }).optional() }),
        z.object({ kind: z.literal('none') }),
      ]),
      fallback: z.union([z.string(), z.object({ apiKey: secret() }), z.object({ apiKey: z.string(), label: z.string() })]).optional(),
      headers: z.record(z.string(), secret()).default({}),
      pinned: z.tuple([z.string(), secret()]).optional(),
      wrapped: secret().nullable().default(null),
      whole: z.object({ a: z.string() }).meta({ secret: true }).optional(),
      piped: z.string().pipe(secret()).optional(),
      tree: z.lazy(() => z.object({ key: secret().optional() })).optional(),
    })
    .strict()
    .refine(() => true);

  it('redacts nested secrets inside a plugin block: objects, arrays, records, tuples and wrappers', () => {
    const block = {
      upstreams: [{ url: 'https://u.example', credentials: { clientId: 'id', clientSecret: 's3cret' } }, { url: 'https://v.example' }],
      auth: { kind: 'none' },
      headers: { authorization: 'Bearer x', 'x-api-key': 'k' },
      pinned: ['name', 'value'],
      wrapped: 'w',
      whole: { a: 'b' },
      piped: 'p',
      tree: { key: 'k' },
    };
    expect(redactSecrets(block, pluginSchema)).toEqual({
      upstreams: [{ url: 'https://u.example', credentials: { clientId: 'id', clientSecret: REDACTED } }, { url: 'https://v.example' }],
      auth: { kind: 'none' },
      headers: { authorization: REDACTED, 'x-api-key': REDACTED },
      pinned: ['name', REDACTED],
      wrapped: REDACTED,
      whole: REDACTED,
      piped: REDACTED,
      tree: { key: REDACTED },
    });
  });

  it('redacts a secret inside a union branch, and a key any branch marks secret', () => {
    expect(redactSecrets({ auth: { kind: 'basic', user: 'u', password: 'p' } }, pluginSchema)).toEqual({ auth: { kind: 'basic', user: 'u', password: REDACTED } });
    expect(redactSecrets({ auth: { kind: 'token', token: 't' } }, pluginSchema)).toEqual({ auth: { kind: 'token', token: REDACTED } });
    // This value matches the branch where apiKey is not secret; another branch marks it, so it is redacted anyway.
    expect(redactSecrets({ auth: { kind: 'none' }, fallback: { apiKey: 'k', label: 'l' } }, pluginSchema)).toMatchObject({ fallback: { apiKey: REDACTED, label: 'l' } });
    expect(redactSecrets({ auth: { kind: 'none' }, fallback: 'plain' }, pluginSchema)).toMatchObject({ fallback: 'plain' });
  });

  it('leaves absent and null secrets alone, and values of the wrong shape untouched', () => {
    expect(redactSecrets({ auth: { kind: 'token' }, wrapped: null }, pluginSchema)).toEqual({ auth: { kind: 'token' }, wrapped: null });
    expect(redactSecrets({ upstreams: 'not a list', headers: ['x'] }, pluginSchema)).toEqual({ upstreams: 'not a list', headers: ['x'] });
  });
});

describe('redactPaths', () => {
  it('replaces only paths that exist', () => {
    const value = { a: [{ b: 'x' }, { b: 'y' }], c: 'z' };
    expect(redactPaths(value, [['a', 1, 'b'], ['a', 5, 'b'], ['missing']])).toEqual({ a: [{ b: 'x' }, { b: REDACTED }], c: 'z' });
    expect(value.a[1]!.b).toBe('y');
  });
});

describe('printableConfig', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tessera-print-'));
    // A local plugin with secrets in its config schema; it imports zod and the SDK by URL since it lives outside the repo.
    const require = createRequire(import.meta.url);
    const zodUrl = pathToFileURL(join(dirname(require.resolve('zod/package.json')), 'index.js')).href;
    const sdkUrl = pathToFileURL(require.resolve('@tessera/plugin-sdk')).href;
    await writeFile(
      join(dir, 'vault-plugin.mjs'),
      [
        `import { definePlugin } from ${JSON.stringify(sdkUrl)};`,
        `import { z } from ${JSON.stringify(zodUrl)};`,
        'const secret = z.string().meta({ secret: true });',
        'const config = z.object({',
        '  address: z.string(),',
        '  namespace: z.string().default("root"),',
        '  auth: z.discriminatedUnion("method", [',
        '    z.object({ method: z.literal("approle"), roleId: z.string(), secretId: secret }),',
        '    z.object({ method: z.literal("token"), token: secret }),',
        '  ]),',
        '}).strict();',
        'export default definePlugin({ name: "vault", version: "1.0.0", apiVersion: "^1", config, deps: {}, init: () => ({}) });',
        '',
      ].join('\n'),
    );
    await writeFile(join(dir, 'secret-id'), 'from-a-file\n');
    await writeFile(
      join(dir, 'broker.yaml'),
      [
        'issuer: https://broker.example',
        'dataDir: ${DATA_DIR}',
        'clients:',
        `  - { id: a, auth: { method: client_secret_basic, secretHash: "${HASH}" } }`,
        'plugins:',
        '  - use: ./vault-plugin.mjs',
        '    config:',
        '      address: https://vault.example',
        '      auth: { method: approle, roleId: "${ROLE_ID}", secretId: "${SECRET_ID}" }',
        'policy:',
        '  rules:',
        '    - id: note',
        '      description: "${file:secret-id}"',
        '',
      ].join('\n'),
    );
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  // SECRET_ID comes from the environment: redacted because the plugin's schema marks it, not because of where it came from.
  const env = { DATA_DIR: 'data-from-env', ROLE_ID: 'role-from-env', SECRET_ID: 'secret-from-env' };

  it('prints the config as written, with secrets redacted and ${ENV} values shown', async () => {
    const loaded = await loadConfigFiles([join(dir, 'broker.yaml')], env);
    expect(await printableConfig(loaded, { resolved: false })).toEqual({
      issuer: 'https://broker.example',
      dataDir: 'data-from-env',
      clients: [{ id: 'a', auth: { method: 'client_secret_basic', secretHash: REDACTED } }],
      plugins: [{ use: './vault-plugin.mjs', config: { address: 'https://vault.example', auth: { method: 'approle', roleId: 'role-from-env', secretId: REDACTED } } }],
      policy: { rules: [{ id: 'note', description: REDACTED }] },
    });
  });

  it('prints the resolved config with every default, plugin defaults included', async () => {
    const loaded = await loadConfigFiles([join(dir, 'broker.yaml')], env);
    const printed = await printableConfig(loaded, { resolved: true });
    expect(printed).toMatchObject({
      listen: { host: '127.0.0.1', port: 8080 },
      clients: [{ id: 'a', auth: { secretHash: REDACTED }, grantTypes: ['token_exchange'] }],
      plugins: [{ config: { namespace: 'root', auth: { roleId: 'role-from-env', secretId: REDACTED } } }],
      policy: { rules: [{ description: REDACTED, grant: { maxLifetimeSeconds: 600 } }] },
    });
    const text = await renderConfig(loaded, { resolved: true });
    expect(text).not.toContain('from-a-file');
    expect(text).not.toContain('secret-from-env');
    expect(text).not.toContain(HASH);
    expect(parse(text)).toEqual(printed);
  });
});
