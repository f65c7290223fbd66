import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { beforeAll, expect, it } from 'vitest';

const CLI = resolve(import.meta.dirname, '../../core/dist/cli/main.js');

function tessera(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [CLI, ...args], (error, stdout, stderr) => done({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }));
  });
}

let config = '';
beforeAll(async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-plugins-list-'));
  config = join(dir, 'broker.yaml');
  await writeFile(
    config,
    [
      'issuer: http://127.0.0.1:9',
      'keys: { generate: true }',
      'plugins:',
      // Discovery is refused (loopback http not allowed): the plugin starts anyway and retries later.
      "  - use: '@tessera/plugin-github-actions'",
      '    config: { owners: [octo-org], issuer: "http://127.0.0.1:9/gh" }',
      "  - use: '@tessera/plugin-access-token'",
      `  - use: ${JSON.stringify(join(import.meta.dirname, 'fixtures/team-directory.mjs'))}`,
      '    config: { teams: {} }',
      '',
    ].join('\n'),
  );
});

it('lists each plugin with what it validates, issues and enriches', async () => {
  const run = await tessera(['plugins', 'list', '--config', config]);
  expect(run.code, run.stderr).toBe(0);
  expect(run.stdout).toBe(
    [
      'github-actions 0.1.0 (@tessera/plugin-github-actions) API ^1',
      '  validates urn:tessera:token-type:github-actions',
      'access-token 0.1.0 (@tessera/plugin-access-token) API ^1.2',
      '  validates urn:ietf:params:oauth:token-type:access_token',
      '  issues urn:ietf:params:oauth:token-type:access_token',
      `team-directory 1.0.0 (${join(import.meta.dirname, 'fixtures/team-directory.mjs')}) API ^1`,
      '  adds attributes for urn:ietf:params:oauth:token-type:id_token',
      '',
    ].join('\n'),
  );
});

it('prints the same as JSON', async () => {
  const run = await tessera(['plugins', 'list', '--json', config]);
  expect(run.code, run.stderr).toBe(0);
  expect(JSON.parse(run.stdout)).toEqual([
    expect.objectContaining({ name: 'github-actions', validates: ['urn:tessera:token-type:github-actions'], issues: [], extractsFor: [] }),
    expect.objectContaining({ name: 'access-token', validates: ['urn:ietf:params:oauth:token-type:access_token'], issues: ['urn:ietf:params:oauth:token-type:access_token'] }),
    expect.objectContaining({ name: 'team-directory', extractsFor: ['urn:ietf:params:oauth:token-type:id_token'] }),
  ]);
});

it('fails with the loader’s message when a plugin cannot load', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-plugins-list-'));
  const broken = join(dir, 'broken.yaml');
  await writeFile(broken, 'issuer: http://127.0.0.1:9\nkeys: { generate: true }\nplugins:\n  - use: "@tessera/plugin-nope"\n');
  const run = await tessera(['plugins', 'list', broken]);
  expect(run.code).toBe(1);
  // The cause, and where the loader looked: beside the config and with the broker.
  expect(run.stderr).toContain(`${broken}:4: plugins[0].use: plugin package "@tessera/plugin-nope" is not installed (searched node_modules upward from ${dir} and from `);
  expect(run.stderr).toContain('npm install @tessera/plugin-nope\n');
  expect((await tessera(['plugins'])).code).toBe(2);
});
