import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { pluginCommand } from '../src/cli/plugin-init.js';

// That the scaffold installs, builds and passes its contract test is proved against the packed packages
// in test/e2e/packaging.test.ts; these are the command's own rules.

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (text: string) => void out.push(text), err: (text: string) => void err.push(text) }, out, err };
}

describe('tessera plugin init', () => {
  it('writes a package depending on the SDK as a caret peer and dev dependency, never on core', async () => {
    const dir = join(await mkdtemp(join(tmpdir(), 'tessera-init-')), 'plugin');
    const { io, out } = capture();
    expect(await pluginCommand(['init', 'ci-job', '--dir', dir, '--package', '@acme/tessera-plugin-ci-job'], io)).toBe(0);
    expect((await readdir(dir, { recursive: true })).sort()).toEqual(['.gitignore', 'README.md', 'package.json', 'src', 'src/index.ts', 'test', 'test/contract.test.ts', 'tsconfig.json']);
    const manifest = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as Record<string, Record<string, string>>;
    const { version } = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(manifest.name).toBe('@acme/tessera-plugin-ci-job');
    expect(manifest.peerDependencies).toEqual({ '@tessera/plugin-sdk': `^${version}` });
    expect(manifest.devDependencies).toMatchObject({ '@tessera/plugin-sdk': `^${version}`, '@tessera/plugin-testkit': `^${version}` });
    expect(manifest.dependencies).not.toHaveProperty('@tessera/plugin-sdk');
    expect({ ...manifest.dependencies, ...manifest.devDependencies }).not.toHaveProperty('@tessera/core');
    expect(await readFile(join(dir, 'src/index.ts'), 'utf8')).toContain("name: 'ci-job'");
    expect(await readFile(join(dir, 'test/contract.test.ts'), 'utf8')).toContain("use: '@acme/tessera-plugin-ci-job'");
    expect(out.join('')).toContain('npm install && npm test');
  });

  it('refuses a directory that is not empty, and leaves it as it was (exit 1)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-init-'));
    await writeFile(join(dir, 'package.json'), '{"name":"mine"}');
    const { io, err } = capture();
    expect(await pluginCommand(['init', 'ci-job', '--dir', dir], io)).toBe(1);
    expect(err.join('')).toContain('is not empty');
    expect(await readdir(dir)).toEqual(['package.json']);
    expect(await readFile(join(dir, 'package.json'), 'utf8')).toBe('{"name":"mine"}');
  });

  it.each([[['init']], [['init', 'CiJob']], [['init', 'ci-job', 'extra']], [['init', 'ci-job', '--package', 'Not Valid']], [['create', 'ci-job']], [[]]])('answers %j with usage, exit 2', async (args) => {
    const { io, err } = capture();
    expect(await pluginCommand(args, io)).toBe(2);
    expect(err.join('')).toContain('usage: tessera plugin init NAME');
  });
});
