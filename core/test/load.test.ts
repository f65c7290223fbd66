import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../src/config/errors.js';
import { loadConfigFile, parseConfigText, type Environment } from '../src/config/load.js';

const FILE = 'tessera.yaml';

function parse(text: string, env: Environment = {}) {
  return parseConfigText(text, { file: FILE, baseDir: '/srv/tessera', env });
}

function configError(text: string, env: Environment = {}): ConfigError {
  try {
    parse(text, env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

const lines = (...rows: string[]) => `${rows.join('\n')}\n`;

describe('parseConfigText', () => {
  it('parses a valid config and applies defaults', () => {
    const loaded = parse(
      lines(
        'issuer: https://broker.example',
        'clients:',
        '  - id: ci',
        '    auth:',
        '      method: private_key_jwt',
        '      jwksUri: https://ci.example/jwks.json',
        'policy:',
        '  rules:',
        '    - id: ci-to-api',
        '      match: { clients: [ci] }',
        '      grant: { audiences: ["https://api.example"], maxLifetimeSeconds: 300 }',
      ),
    );
    expect(loaded.baseDir).toBe('/srv/tessera');
    expect(loaded.config.issuer).toBe('https://broker.example');
    expect(loaded.config.listen).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(loaded.config.clients[0]).toMatchObject({ id: 'ci', grantTypes: ['token_exchange'], auth: { method: 'private_key_jwt' } });
    expect(loaded.config.policy.rules[0]!.grant).toMatchObject({ audiences: ['https://api.example'], maxLifetimeSeconds: 300, scopes: [] });
    expect(loaded.locate(['policy', 'rules', 0, 'id'])).toBe(`${FILE}:9`);
  });

  it('reports a bad value as file:LINE: path: message', () => {
    const error = configError(lines('# Tessera', '', 'issuer: not a url'));
    expect(error.problems).toEqual([`${FILE}:3: issuer: must be an absolute URL`]);
    expect(error.message).toBe(`${FILE}:3: issuer: must be an absolute URL`);
  });

  it('locates a nested problem on its own line', () => {
    const error = configError(
      lines(
        'issuer: https://broker.example',
        'clients:',
        '  - id: ci',
        '    auth:',
        '      method: private_key_jwt',
        '      jwksUri: http://example.com',
      ),
    );
    expect(error.problems).toHaveLength(1);
    expect(error.message).toContain(`${FILE}:6: clients[0].auth.jwksUri: must be https`);
  });

  it('names every problem, each with its line', () => {
    const error = configError(lines('issuer: http://broker.example', 'listen:', '  port: 70000'));
    expect(error.problems).toHaveLength(2);
    expect(error.problems).toContain(`${FILE}:1: issuer: must be https (http only for loopback)`);
    expect(error.problems.some((problem) => problem.startsWith(`${FILE}:3: listen.port: `))).toBe(true);
    expect(error.message).toMatch(/^invalid configuration:\n {2}/);
  });

  it('rejects unknown top-level keys', () => {
    const error = configError(lines('issuer: https://broker.example', 'issuerr: https://typo.example'));
    expect(error.message).toContain('issuerr');
    expect(error.message).toContain(`${FILE}:`);
  });

  it('rejects unknown nested keys', () => {
    const error = configError(lines('issuer: https://broker.example', 'listen:', '  hots: 0.0.0.0'));
    expect(error.message).toContain('listen');
    expect(error.message).toContain('hots');
  });

  it('rejects duplicate YAML keys with their line', () => {
    const error = configError(lines('issuer: https://a.example', 'dataDir: x', 'issuer: https://b.example'));
    expect(error.problems).toHaveLength(1);
    expect(error.message).toMatch(new RegExp(`^${FILE}:3: .*unique`));
  });

  it('reports YAML syntax errors with a line', () => {
    const error = configError(lines('issuer: https://broker.example', 'clients: [', '  - x'));
    expect(error.problems[0]).toMatch(new RegExp(`^${FILE}:\\d+: `));
  });

  describe('environment substitution', () => {
    it('substitutes ${VAR}', () => {
      const { config } = parse(lines('issuer: ${ISSUER}', 'dataDir: ${DATA}/keys'), { ISSUER: 'https://broker.example', DATA: '/var/lib' });
      expect(config.issuer).toBe('https://broker.example');
      expect(config.dataDir).toBe('/var/lib/keys');
    });

    it('uses ${VAR:-default} when the variable is unset or empty', () => {
      const text = lines('issuer: ${ISSUER:-https://default.example}');
      expect(parse(text).config.issuer).toBe('https://default.example');
      expect(parse(text, { ISSUER: '' }).config.issuer).toBe('https://default.example');
      expect(parse(text, { ISSUER: 'https://set.example' }).config.issuer).toBe('https://set.example');
    });

    it('allows an empty default', () => {
      const { config } = parse(lines('issuer: https://broker.example', 'dataDir: "data${SUFFIX:-}"'));
      expect(config.dataDir).toBe('data');
    });

    it('keeps $${ as a literal ${', () => {
      const { config } = parse(lines('issuer: https://broker.example', 'dataDir: "$${HOME}/x-$${"'), { HOME: '/root' });
      expect(config.dataDir).toBe('${HOME}/x-${');
    });

    it('reports a missing variable with its line and path', () => {
      const error = configError(
        lines('issuer: https://broker.example', 'policy:', '  rules:', '    - id: r', '      match:', '        clients: ["${CI_CLIENT}"]'),
      );
      expect(error.problems).toEqual([`${FILE}:6: policy.rules[0].match.clients[0]: environment variable CI_CLIENT is not set`]);
    });

    it('reports every missing variable', () => {
      const error = configError(lines('issuer: ${ISSUER}', 'dataDir: ${DATA}'));
      expect(error.problems).toEqual([
        `${FILE}:1: issuer: environment variable ISSUER is not set`,
        `${FILE}:2: dataDir: environment variable DATA is not set`,
      ]);
    });

    it('never injects YAML structure from a value', () => {
      const { config } = parse(lines('issuer: https://broker.example', 'plugins:', '  - use: ./p.js', '    config: { value: "${V}" }'), {
        V: 'x\nissuer: https://evil.example\nbogus: [1]',
      });
      expect(config.issuer).toBe('https://broker.example');
      expect(config.plugins[0]!.config).toEqual({ value: 'x\nissuer: https://evil.example\nbogus: [1]' });
    });

    it('validates the substituted value', () => {
      const error = configError(lines('issuer: ${ISSUER}'), { ISSUER: 'http://broker.example' });
      expect(error.problems).toEqual([`${FILE}:1: issuer: must be https (http only for loopback)`]);
    });
  });
});

describe('loadConfigFile', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('reads a file and resolves baseDir to its directory', async () => {
    dir = await mkdtemp(join(tmpdir(), 'tessera-config-'));
    const path = join(dir, 'tessera.yaml');
    await writeFile(path, lines('issuer: ${ISSUER}'));
    const loaded = await loadConfigFile(path, { ISSUER: 'https://broker.example' });
    expect(loaded.baseDir).toBe(dir);
    expect(loaded.config.issuer).toBe('https://broker.example');
  });

  it('reports an unreadable file as a ConfigError', async () => {
    dir = await mkdtemp(join(tmpdir(), 'tessera-config-'));
    const path = join(dir, 'missing.yaml');
    await expect(loadConfigFile(path, {})).rejects.toThrow(ConfigError);
    await expect(loadConfigFile(path, {})).rejects.toThrow(`${path}: cannot read the config file`);
  });
});
