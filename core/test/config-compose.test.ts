import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../src/config/errors.js';
import { loadConfigFile, loadConfigFiles } from '../src/config/load.js';

const lines = (...rows: string[]) => `${rows.join('\n')}\n`;

let dir = '';
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tessera-compose-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Writes files under the test directory (creating folders) and returns their paths. */
async function files(contents: Record<string, string>): Promise<Record<string, string>> {
  const paths: Record<string, string> = {};
  for (const [name, text] of Object.entries(contents)) {
    paths[name] = join(dir, name);
    await mkdir(join(paths[name], '..'), { recursive: true });
    await writeFile(paths[name], text);
  }
  return paths;
}

async function loadError(paths: string[]): Promise<ConfigError> {
  const error = await loadConfigFiles(paths, {}).catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(ConfigError);
  return error as ConfigError;
}

const client = (id: string, description: string) => [`  - id: ${id}`, `    description: ${description}`, '    auth: { method: none }'];

describe('merging config files', () => {
  it('merges mappings key by key; a later scalar or list replaces the earlier one', async () => {
    const { base, over } = await files({
      base: lines('issuer: https://broker.example', 'listen: { host: 0.0.0.0, port: 9000 }', 'clientAuth:', '  algorithms: [ES256, RS256]', '  clockSkewSeconds: 10'),
      over: lines('listen: { port: 9100 }', 'clientAuth:', '  algorithms: [EdDSA]'),
    });
    const { config } = await loadConfigFiles([base!, over!], {});
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 9100 });
    expect(config.clientAuth).toMatchObject({ algorithms: ['EdDSA'], clockSkewSeconds: 10 });
  });

  it('applies files in the order given', async () => {
    const { a, b } = await files({ a: lines('issuer: https://a.example'), b: lines('issuer: https://b.example') });
    expect((await loadConfigFiles([a!, b!], {})).config.issuer).toBe('https://b.example');
    expect((await loadConfigFiles([b!, a!], {})).config.issuer).toBe('https://a.example');
  });

  it('replaces keyed list entries in place and appends new ones', async () => {
    const { base, over } = await files({
      base: lines(
        'issuer: https://broker.example',
        'clients:',
        ...client('a', 'first a'),
        ...client('b', 'first b'),
        'plugins:',
        "  - use: '@tessera/plugin-oidc'",
        '    config: { issuers: [{ issuer: https://one.example }], maxTokenBytes: 1000 }',
        'policy:',
        '  rules:',
        '    - id: r1',
        '      grant: { audiences: [https://one.example] }',
        '    - id: r2',
      ),
      over: lines(
        'clients:',
        ...client('c', 'new c'),
        '  - id: a',
        '    auth: { method: none }',
        'plugins:',
        "  - use: '@tessera/plugin-oidc'",
        '    config: { issuers: [{ issuer: https://two.example }] }',
        'policy:',
        '  rules:',
        '    - id: r1',
        '      grant: { audiences: [https://two.example] }',
      ),
    });
    const { config } = await loadConfigFiles([base!, over!], {});
    expect(config.clients.map((entry) => [entry.id, entry.description])).toEqual([
      ['a', undefined], // the whole entry is replaced: `description` is not kept
      ['b', 'first b'],
      ['c', 'new c'],
    ]);
    expect(config.plugins).toEqual([{ use: '@tessera/plugin-oidc', config: { issuers: [{ issuer: 'https://two.example' }] } }]);
    expect(config.policy.rules.map((rule) => [rule.id, rule.grant.audiences])).toEqual([
      ['r1', ['https://two.example']],
      ['r2', []],
    ]);
  });

  it('still reports an id listed twice within one file', async () => {
    const { base, over } = await files({
      base: lines('issuer: https://broker.example', 'clients:', ...client('a', 'x')),
      over: lines('clients:', ...client('a', 'y'), ...client('a', 'z')),
    });
    const error = await loadError([base!, over!]);
    expect(error.problems).toEqual([`${base}:3: clients: client id listed twice`]);
  });

  it('treats other lists as values: a later list replaces the whole list', async () => {
    const { base, over } = await files({
      base: lines('issuer: https://broker.example', 'keys:', '  files: [{ path: a.pem }, { path: b.pem }]'),
      over: lines('keys:', '  files: [{ path: c.pem }]'),
    });
    expect((await loadConfigFiles([base!, over!], {})).config.keys.files).toEqual([{ path: 'c.pem' }]);
  });

  it('skips an empty file', async () => {
    const { base, empty } = await files({ base: lines('issuer: https://broker.example'), empty: '# nothing yet\n' });
    expect((await loadConfigFiles([base!, empty!], {})).config.issuer).toBe('https://broker.example');
  });

  it('resolves relative paths against the first file’s directory', async () => {
    const written = await files({ 'project/base.yaml': lines('issuer: https://broker.example'), 'elsewhere/over.yaml': lines('dataDir: data') });
    const [base, over] = [written['project/base.yaml']!, written['elsewhere/over.yaml']!];
    const loaded = await loadConfigFiles([base, over], {});
    expect(loaded.baseDir).toBe(join(dir, 'project'));
    expect(loaded.files).toEqual([base, over]);
  });

  it('keeps loadConfigFile as the one-path case', async () => {
    const { base } = await files({ base: lines('issuer: https://broker.example') });
    const loaded = await loadConfigFile(base!, {});
    expect(loaded.files).toEqual([base]);
    expect(loaded.written).toEqual({ issuer: 'https://broker.example' });
  });
});

describe('config directories', () => {
  it('reads *.yaml, *.yml and *.json in byte order, skipping hidden files, other names and subdirectories', async () => {
    await files({
      'conf.d/20-b.yml': lines('dataDir: from-20'),
      'conf.d/10-a.yaml': lines('issuer: https://broker.example', 'dataDir: from-10'),
      'conf.d/Z-upper.json': JSON.stringify({ log: { level: 'debug' } }),
      'conf.d/a-lower.yaml': lines('log: { level: warn }'),
      'conf.d/.hidden.yaml': lines('issuer: https://hidden.example'),
      'conf.d/notes.txt': 'issuer: https://txt.example\n',
      'conf.d/nested.yaml/inner.yaml': lines('issuer: https://nested.example'),
    });
    const confD = join(dir, 'conf.d');
    const loaded = await loadConfigFiles([confD], {});
    // Byte order: digits < upper case < lower case, whatever the locale.
    expect(loaded.files).toEqual(['10-a.yaml', '20-b.yml', 'Z-upper.json', 'a-lower.yaml'].map((name) => join(confD, name)));
    expect(loaded.config).toMatchObject({ issuer: 'https://broker.example', dataDir: 'from-20', log: { level: 'warn' } });
    expect(loaded.baseDir).toBe(confD);
  });

  it('follows symlinked entries but not hidden ones (Kubernetes ConfigMap layout)', async () => {
    await files({ 'cm/..data/broker.yaml': lines('issuer: https://broker.example') });
    await symlink(join('..data', 'broker.yaml'), join(dir, 'cm', 'broker.yaml'));
    expect((await loadConfigFiles([join(dir, 'cm')], {})).files).toEqual([join(dir, 'cm', 'broker.yaml')]);
  });

  it('merges a file, then a directory', async () => {
    const { base } = await files({
      base: lines('issuer: https://broker.example', 'clients:', ...client('a', 'from base')),
      'conf.d/10-clients.yaml': lines('clients:', ...client('a', 'from conf.d')),
    });
    const { config } = await loadConfigFiles([base!, join(dir, 'conf.d')], {});
    expect(config.clients.map((entry) => entry.description)).toEqual(['from conf.d']);
  });

  it('reports a missing path, and paths with no config file', async () => {
    await mkdir(join(dir, 'empty'));
    expect((await loadError([join(dir, 'missing.yaml')])).problems).toEqual([`${join(dir, 'missing.yaml')}: cannot read the config file`]);
    expect((await loadError([join(dir, 'empty')])).problems).toEqual([`${join(dir, 'empty')}: no *.yaml, *.yml or *.json config file`]);
    expect((await loadError([])).problems).toEqual(['no config file given']);
  });
});

describe('errors across files', () => {
  it('names the file and line that supplied a bad value, through keyed-list remapping', async () => {
    const { base, over } = await files({
      base: lines('issuer: https://broker.example', 'clients:', ...client('a', 'x'), ...client('b', 'y')),
      over: lines('# overlay', 'clients:', ...client('c', 'z'), '  - id: b', '    auth: { method: private_key_jwt, jwksUri: http://b.example/jwks }'),
    });
    const error = await loadError([base!, over!]);
    // Merged index 1 is the overlay's entry 1 (it replaced b in place).
    expect(error.problems).toEqual([`${over}:7: clients[1].auth.jwksUri: must be https (http only for loopback)`]);
  });

  it('locates values, merged maps and appended entries in the file that wrote them', async () => {
    const { base, over } = await files({
      base: lines('issuer: https://broker.example', 'listen:', '  host: 0.0.0.0', 'clients:', ...client('a', 'x')),
      over: lines('listen:', '  port: 9000', 'clients:', ...client('b', 'y')),
    });
    const { locate } = await loadConfigFiles([base!, over!], {});
    expect(locate(['issuer'])).toBe(`${base}:1`);
    expect(locate(['listen', 'host'])).toBe(`${base}:3`);
    expect(locate(['listen', 'port'])).toBe(`${over}:2`);
    expect(locate(['clients', 0, 'id'])).toBe(`${base}:5`);
    expect(locate(['clients', 1, 'description'])).toBe(`${over}:5`);
    expect(locate(['clients', 1, 'auth', 'method'])).toBe(`${over}:6`);
  });

  it('locates an unknown key in the file that wrote it', async () => {
    const { base, over } = await files({
      base: lines('issuer: https://broker.example', 'listen:', '  host: 0.0.0.0'),
      over: lines('', 'listen:', '  hots: 0.0.0.0'),
    });
    const error = await loadError([base!, over!]);
    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toMatch(new RegExp(`^${over}:3: listen: .*hots`));
  });

  it('names the file of a YAML syntax error, and keeps duplicate keys in one file an error', async () => {
    const { good, broken, twice } = await files({
      good: lines('issuer: https://broker.example'),
      broken: lines('clients: [', '  - x'),
      twice: lines('log: { level: info }', 'log: { level: warn }'),
    });
    const error = await loadError([good!, broken!, twice!]);
    expect(error.problems.slice(0, -1).every((problem) => new RegExp(`^${broken}:\\d+: `).test(problem))).toBe(true);
    expect(error.problems.at(-1)).toMatch(new RegExp(`^${twice}:2: .*unique`));
  });

  it('reports problems of every file in one go', async () => {
    const { a, b } = await files({ a: lines('issuer: ${ISSUER}'), b: lines('dataDir: ${DATA}') });
    const error = await loadError([a!, b!]);
    expect(error.problems).toEqual([`${a}:1: issuer: environment variable ISSUER is not set`, `${b}:1: dataDir: environment variable DATA is not set`]);
  });
});
