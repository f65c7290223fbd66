import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { hashClientSecret } from '@tessera/core';

const CLI = resolve(import.meta.dirname, '../../core/dist/cli/main.js');

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function tessera(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((done) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } }, (error, stdout, stderr) => {
      done({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr });
    });
  });
}

const lines = (...rows: string[]) => `${rows.join('\n')}\n`;

let dir = '';
let hash = '';
let base = '';
let confD = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tessera-compose-e2e-'));
  hash = await hashClientSecret('a-client-secret-of-some-length');
  base = join(dir, 'base.yaml');
  confD = join(dir, 'conf.d');
  await mkdir(join(confD, 'secrets'), { recursive: true });
  await writeFile(
    base,
    lines(
      'issuer: http://127.0.0.1:9',
      'listen: { port: 0 }',
      'dataDir: data',
      'keys: { generate: true }',
      'log: { level: silent }',
      'plugins:',
      "  - use: '@tessera/plugin-access-token'",
      'clients:',
      '  - id: billing',
      '    auth: { method: none }',
    ),
  );
  await writeFile(join(confD, 'secrets', 'billing.hash'), `${hash}\n`);
  await writeFile(
    join(confD, '10-clients.yaml'),
    lines('clients:', '  - id: billing', '    auth:', '      method: client_secret_basic', '      secretHash: ${file:secrets/billing.hash}', '  - id: reports', '    auth: { method: none }'),
  );
  await writeFile(join(confD, '20-policy.yaml'), lines('policy:', '  rules:', '    - id: reports', '      description: ${RULE_NOTE}', '      match: { clients: [reports] }'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('tessera config validate', () => {
  it('exits 0 for a valid composition, from positionals and --config in command-line order', async () => {
    const run = await tessera(['config', 'validate', base, '--config', confD], { RULE_NOTE: 'n' });
    expect(run).toMatchObject({ code: 0, stderr: '' });
    // Valid, and honest about what only the network could tell.
    expect(run.stdout).toBe(
      `${base}, ${join(confD, '10-clients.yaml')}, ${join(confD, '20-policy.yaml')}: valid\n  not checked: plugins: remote services plugins use (issuers' keys, SPIRE agent, cloud APIs) are not contacted\n`,
    );
  });

  it('exits 1 with one file:line: path: message line per problem, naming the overlay', async () => {
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, lines('listen:', '  port: 70000', 'clients:', '  - id: reports', '    auth: { method: private_key_jwt }'));
    const run = await tessera(['config', 'validate', '-c', base, '-c', confD, '-c', bad], { RULE_NOTE: 'n' });
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    const problems = run.stderr.trimEnd().split('\n');
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(new RegExp(`^${bad}:2: listen\\.port: `));
    // reports is merged index 1 (conf.d replaced billing and appended reports); bad.yaml's entry 0 replaced it.
    expect(problems[1]).toBe(`${bad}:5: clients[1].auth: exactly one of jwks or jwksUri is required`);
  });

  it('exits 1 for an unreadable file and for an unset variable', async () => {
    const missing = join(dir, 'missing.yaml');
    const [unreadable, unset] = await Promise.all([tessera(['config', 'validate', base, missing]), tessera(['config', 'validate', base, confD], { RULE_NOTE: '' })]);
    expect(unreadable).toEqual({ code: 1, stdout: '', stderr: `${missing}: cannot read the config file\n` });
    expect(unset).toMatchObject({ code: 1, stderr: `${join(confD, '20-policy.yaml')}:4: policy.rules[0].description: environment variable RULE_NOTE is not set\n` });
  });

  it('exits 2 for a usage error', async () => {
    const runs = await Promise.all([['config', 'validate'], ['config', 'validate', '--bogus', base], ['config', 'print', '--resolved'], ['serve']].map((args) => tessera(args)));
    expect(runs.map((run) => run.code)).toEqual([2, 2, 2, 2]);
  });
});

describe('tessera config print', () => {
  it('--resolved prints every default and redacts secretHash and ${file:} values, not ${ENV} ones', async () => {
    const run = await tessera(['config', 'print', '--resolved', '--config', base, '--config', confD], { RULE_NOTE: 'note-from-env' });
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(run.stdout).not.toContain(hash);
    const printed = parse(run.stdout) as Record<string, unknown>;
    expect(printed).toMatchObject({
      listen: { host: '127.0.0.1', port: 0 },
      clients: [
        { id: 'billing', auth: { method: 'client_secret_basic', secretHash: '<redacted>' }, grantTypes: ['token_exchange'] },
        { id: 'reports', auth: { method: 'none' } },
      ],
      plugins: [{ use: '@tessera/plugin-access-token', config: { maxLifetimeSeconds: 3600 } }],
      policy: { rules: [{ id: 'reports', description: 'note-from-env', grant: { maxLifetimeSeconds: 600 } }] },
    });
  });

  it('without --resolved prints the merge as written', async () => {
    const run = await tessera(['config', 'print', base, confD], { RULE_NOTE: 'note-from-env' });
    expect(run.code).toBe(0);
    const printed = parse(run.stdout) as Record<string, unknown>;
    expect(printed).not.toHaveProperty('network');
    expect(printed.clients).toEqual([
      { id: 'billing', auth: { method: 'client_secret_basic', secretHash: '<redacted>' } },
      { id: 'reports', auth: { method: 'none' } },
    ]);
  });
});

describe('tessera serve', () => {
  it('starts from repeated --config and stops on SIGTERM', async () => {
    const child = spawn(process.execPath, [CLI, 'serve', '--config', base, '--config', confD], {
      env: { ...process.env, RULE_NOTE: 'n', PORT: '0' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    try {
      await new Promise<void>((started, failed) => {
        child.stderr.on('data', (chunk: Buffer) => {
          stderr += chunk.toString();
          if (stderr.includes('tessera listening on')) started();
        });
        child.once('exit', (code) => failed(new Error(`exited ${code}: ${stderr}`)));
      });
      const exited = new Promise<number | null>((done) => child.once('exit', done));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      // A failed assertion must not leave a broker running after the test.
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
