import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { brokerJsonSchema, checkConfig, ConfigError, loadConfigFile, parseConfigText, resolvePlugins, type LoadedConfig } from '@tessera/core';
import { PLUGIN_API_VERSION } from '@tessera/plugin-sdk';

const resolvePluginsOf = async (loaded: LoadedConfig) => (await resolvePlugins(loaded.config.plugins, loaded.baseDir, loaded.locate)).length;

const REPO = resolve(import.meta.dirname, '../..');
const CONFIG_DIR = join(REPO, 'config');
/** Example configs name production key and audit paths (through TESSERA_KEY_DIR, TESSERA_AUDIT_DIR): real ones are made here. */
let FIXTURE_KEYS = '';
beforeAll(async () => {
  FIXTURE_KEYS = await mkdtemp(join(tmpdir(), 'tessera-example-keys-'));
  for (const name of ['signing-2025-06.pem', 'signing-2025-01.pem']) {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    await writeFile(join(FIXTURE_KEYS, name), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  }
});

describe('config files', () => {
  it('config/schema.json is what `npm run schema` generates (it cannot rot)', async () => {
    const committed = JSON.parse(await readFile(join(CONFIG_DIR, 'schema.json'), 'utf8')) as unknown;
    expect(committed).toEqual(await brokerJsonSchema());
  });

  it('the JSON Schema types each built-in plugin block', async () => {
    const schema = (await brokerJsonSchema()) as { properties: { plugins: { items: { anyOf: { properties: { use: { const?: string } } }[] } } } };
    const uses = schema.properties.plugins.items.anyOf.map((entry) => entry.properties.use.const);
    expect(uses).toEqual(expect.arrayContaining(['@tessera/plugin-oidc', '@tessera/plugin-access-token']));
  });

  it('every example config in config/ validates, plugin blocks included', async () => {
    const files = [
      ...(await readdir(CONFIG_DIR)).filter((name) => name.endsWith('.yaml')).map((name) => join(CONFIG_DIR, name)),
      ...(await readdir(join(CONFIG_DIR, 'examples')).catch(() => [] as string[])).filter((name) => name.endsWith('.yaml')).map((name) => join(CONFIG_DIR, 'examples', name)),
    ];
    expect(files.length).toBeGreaterThanOrEqual(1);
    for (const file of files) {
      // The keys' directory holds the audit file too: validate looks for a writable directory, creates nothing.
      const loaded = await loadConfigFile(file, { ...process.env, TESSERA_KEY_DIR: FIXTURE_KEYS, TESSERA_AUDIT_DIR: FIXTURE_KEYS });
      await expect(resolvePluginsOf(loaded), file).resolves.toBeGreaterThan(0);
      await expect(checkConfig(loaded), file).resolves.toBeInstanceOf(Array);
    }
  });

  it('config validate catches what would stop startup: hashes, inline JWKS, rule defaults, key files', async () => {
    const text = [
      'issuer: https://broker.example',
      'keys:',
      '  files: [{ path: missing.pem }]',
      'clients:',
      '  - id: a',
      '    auth: { method: client_secret_basic, secretHash: "$scrypt$N=3,r=8,p=1$xx$yy" }',
      'policy:',
      '  rules:',
      '    - id: r',
      '      grant: { audiences: [https://api.example], defaultAudiences: [https://other.example] }',
      '',
    ].join('\n');
    const error = (await checkConfig(parseConfigText(text, { file: 'broker.yaml', baseDir: CONFIG_DIR })).catch((caught: unknown) => caught)) as ConfigError;
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.problems).toEqual([
      // In file order, as an editor lists them.
      'broker.yaml:3: keys.files[0].path: cannot read the key file',
      'broker.yaml:6: clients[0].auth.secretHash: not a valid scrypt hash',
      'broker.yaml:10: policy.rules[0].grant.defaultAudiences: "https://other.example" is not in audiences (rule r)',
    ]);
  });

  it('reports a bad plugin block with file:line and the full path', async () => {
    const text = ['issuer: https://broker.example', 'plugins:', '  - use: "@tessera/plugin-oidc"', '    config:', '      issuers:', '        - issuer: https://idp.example', '          jwksUri: http://idp.example/jwks', ''].join('\n');
    const loaded = parseConfigText(text, { file: 'broker.yaml', baseDir: CONFIG_DIR });
    const error = await resolvePluginsOf(loaded).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).message).toContain('broker.yaml:7: plugins[0].config.issuers[0].jwksUri: must be an https URL');
  });

  it('names an unknown plugin and a plugin needing another core API', async () => {
    const text = ['issuer: https://broker.example', 'plugins:', '  - use: "@tessera/plugin-does-not-exist"', '  - use: ./fixtures/future-plugin.mjs', ''].join('\n');
    const loaded = parseConfigText(text, { file: 'broker.yaml', baseDir: import.meta.dirname });
    const error = (await resolvePluginsOf(loaded).catch((caught: unknown) => caught)) as ConfigError;
    expect(error.problems).toEqual([
      expect.stringMatching(/^broker\.yaml:3: plugins\[0\]\.use: plugin package "@tessera\/plugin-does-not-exist" is not installed \(searched node_modules upward from \S+ and from \S+\); install it beside the config or with the broker: npm install @tessera\/plugin-does-not-exist$/),
      `broker.yaml:4: plugins[1]: plugin "future" needs core plugin API ^2, this core provides ${PLUGIN_API_VERSION}`,
    ]);
  });
});
