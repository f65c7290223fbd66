import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI } from './serve.js';

/** Runs the CLI; resolves with its exit code and output (a non-zero exit is an answer, not a failure). */
function tessera(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [CLI, ...args], (error, stdout, stderr) => done({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }));
  });
}

const COMMANDS: readonly (readonly string[])[] = [
  ['serve'],
  ['config', 'validate'],
  ['config', 'print'],
  ['plugins', 'list'],
  ['plugin', 'init'],
  ['policy', 'explain'],
  ['keys', 'generate'],
  ['secret', 'hash'],
  ['audit', 'verify'],
  ['revoke'],
  ['revocations', 'list'],
  ['exchange'],
  ['healthcheck'],
];

describe('tessera CLI conventions', () => {
  it.each(COMMANDS)('answers %s --help with its usage on stdout, exit 0', async (...command) => {
    const { code, stdout } = await tessera(...command, '--help');
    expect(code, command.join(' ')).toBe(0);
    expect(stdout).toMatch(new RegExp(`tessera ${command[0]}`));
  });

  it('takes -h for --help, also before other options', async () => {
    expect(await tessera('serve', '-h', '--config', 'missing.yaml')).toEqual(await tessera('serve', '--help'));
  });

  it('answers tessera help COMMAND like COMMAND --help, and an unknown one with exit 2', async () => {
    expect(await tessera('help', 'audit')).toEqual(await tessera('audit', '--help'));
    expect((await tessera('help', 'nope')).code).toBe(2);
  });

  it('prints the installed version', async () => {
    const { version } = JSON.parse(await readFile(resolve(import.meta.dirname, '../../core/package.json'), 'utf8')) as { version: string };
    expect(await tessera('--version')).toMatchObject({ code: 0, stdout: `tessera ${version}\n` });
  });
});
