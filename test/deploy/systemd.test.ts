import { spawn, spawnSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { validateConfig } from '@tessera/core';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, Serve, freePort, until } from '../e2e/serve.js';

// deploy/systemd/tessera.service: checked by systemd's own parser where systemd-analyze exists, its
// signals and stop timeout exercised against a real `tessera serve`, and its MemoryDenyWriteExecute=no
// justified by running Node under the same restriction.

const REPO = resolve(import.meta.dirname, '../..');
const UNIT = 'deploy/systemd/tessera.service';
const unitText = await readFile(join(REPO, UNIT), 'utf8');
const doc = await readFile(join(REPO, 'docs/deploy.md'), 'utf8');

/** Every `Key=value` of the unit, in order (a key may repeat). */
const directives: [string, string][] = unitText
  .split('\n')
  .filter((line) => /^[A-Za-z]+=/.test(line))
  .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]);
const values = (key: string): string[] => directives.filter(([name]) => name === key).map(([, value]) => value);
const value = (key: string): string | undefined => values(key).at(-1);

function available(command: string, args: string[]): boolean {
  return spawnSync(command, args, { stdio: 'ignore' }).status === 0;
}

/** The unit with its `tessera` binary pointed at an executable that runs this checkout's CLI. */
async function unitWithThisCli(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-unit-'));
  const bin = join(dir, 'tessera');
  await writeFile(bin, `#!/bin/sh\nexec '${process.execPath}' '${CLI}' "$@"\n`);
  await chmod(bin, 0o755);
  const unit = join(dir, 'tessera.service');
  await writeFile(unit, unitText.replaceAll('/usr/bin/tessera', bin));
  return unit;
}

const serves: Serve[] = [];
afterEach(async () => {
  for (const serve of serves.splice(0)) {
    if (serve.exit === undefined) {
      serve.child.kill('SIGKILL');
      await serve.exited;
    }
  }
});

describe(UNIT, () => {
  it('is accepted by systemd-analyze verify without a single warning', async (ctx) => {
    if (!available('systemd-analyze', ['--version'])) ctx.skip('systemd-analyze is not installed (Debian package systemd)');
    const unit = await unitWithThisCli();
    const verify = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
    // verify exits 0 even for unknown keys or unparsable values: it only warns, so any output fails.
    expect(verify.stdout + verify.stderr).toBe('');
    expect(verify.status).toBe(0);

    const security = spawnSync('systemd-analyze', ['security', '--offline=yes', unit], { encoding: 'utf8' });
    expect(security.status, security.stderr).toBe(0);
    const exposure = /Overall exposure level for tessera\.service: ([\d.]+) (\w+)/.exec(security.stdout);
    expect(exposure, security.stdout).not.toBeNull();
    expect(exposure![2]).toBe('OK');
    // The guide quotes the score.
    expect(doc).toContain(`\`systemd-analyze security\` rates it ${exposure![1]} ("OK")`);
  });

  it('sandboxes the service as the guide says', () => {
    expect(value('DynamicUser')).toBe('yes');
    expect(value('ProtectSystem')).toBe('strict');
    expect(value('ProtectHome')).toBe('yes');
    expect(value('PrivateTmp')).toBe('yes');
    expect(value('NoNewPrivileges')).toBe('yes');
    expect(value('CapabilityBoundingSet')).toBe('');
    expect(value('AmbientCapabilities')).toBe('');
    expect(value('RestrictAddressFamilies')).toBe('AF_INET AF_INET6 AF_UNIX');
    expect(values('SystemCallFilter')).toEqual(['@system-service', '~@privileged']);
    expect(value('SystemCallErrorNumber')).toBe('EPERM');
    expect(value('MemoryDenyWriteExecute')).toBe('no');
    expect(value('StateDirectory')).toBe('tessera');
    expect(value('LogsDirectory')).toBe('tessera');
    expect(value('KillSignal')).toBe('SIGTERM');
    expect(value('KillMode')).toBe('mixed');
  });

  it('stops later than the broker drains and closes its audit sink, with the default config', () => {
    const defaults = validateConfig({ issuer: 'https://sts.example.com', keys: { generate: true } });
    const stopSeconds = Number(value('TimeoutStopSec'));
    expect(stopSeconds).toBeGreaterThan((defaults.lifecycle.drainTimeoutMs + defaults.audit.closeTimeoutMs) / 1000);
  });

  it('runs ExecStart, reloads on ExecReload and drains on KillSignal, as systemd would call them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-unit-run-'));
    const confd = join(dir, 'conf.d');
    await mkdir(confd);
    await mkdir(join(dir, 'log')); // LogsDirectory= makes it before ExecStartPre
    await writeFile(join(confd, '10-broker.yaml'), `issuer: https://sts.example.com\nkeys: { generate: true }\ndataDir: ${join(dir, 'state')}\naudit: { destination: { file: ${join(dir, 'log', 'audit.jsonl')} } }\n`);
    const [binary, ...args] = value('ExecStart')!.split(' ');
    expect(binary).toBe('/usr/bin/tessera');
    expect(args).toEqual(['serve', '--config', '/etc/tessera/conf.d']);
    const pre = value('ExecStartPre')!.split(' ');
    expect(pre).toEqual(['/usr/bin/tessera', 'config', 'validate', '/etc/tessera/conf.d']);
    const withDir = (list: string[]) => list.map((arg) => (arg === '/etc/tessera/conf.d' ? confd : arg));

    const validated = spawnSync(process.execPath, [CLI, ...withDir(pre.slice(1))], { encoding: 'utf8' });
    expect(validated.status, validated.stderr).toBe(0);

    const port = await freePort();
    const child = spawn(process.execPath, [CLI, ...withDir(args)], { env: { ...process.env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'] });
    const serve = new Serve(child, port);
    serves.push(serve);
    await until('the listening line', () => serve.stderr.includes('tessera listening on') || serve.exit !== undefined, 30_000);
    expect(serve.exit).toBeUndefined();

    // ExecReload exactly as written, with systemd's $MAINPID.
    const reload = spawnSync('bash', ['-c', value('ExecReload')!], { env: { ...process.env, MAINPID: String(child.pid) }, encoding: 'utf8' });
    expect(reload.status, reload.stderr).toBe(0);
    await serve.waitForLog('reload applied');

    const stopping = Date.now();
    child.kill(value('KillSignal') as NodeJS.Signals);
    await serve.exited;
    expect(serve.exit).toMatchObject({ code: 0 });
    expect(Date.now() - stopping).toBeLessThan(Number(value('TimeoutStopSec')) * 1000);
  });
});

describe('MemoryDenyWriteExecute=yes and Node', () => {
  const SCRIPT = 'let s = 0; for (let i = 0; i < 1e6; i++) s += i; console.log(s)';

  async function mdwe(ctx: { skip: (note?: string) => never }): Promise<string> {
    if (process.arch !== 'x64' || process.platform !== 'linux') ctx.skip('the seccomp filter is written for x86-64 Linux');
    if (!available('cc', ['--version'])) ctx.skip('no C compiler (cc) to build test/deploy/fixtures/mdwe.c');
    const dir = await mkdtemp(join(tmpdir(), 'tessera-mdwe-'));
    const bin = join(dir, 'mdwe');
    const built = spawnSync('cc', ['-O2', '-o', bin, join(import.meta.dirname, 'fixtures/mdwe.c')], { encoding: 'utf8' });
    expect(built.status, built.stderr).toBe(0);
    return bin;
  }

  function underMdwe(bin: string, prefix: string[], nodeArgs: string[]) {
    return spawnSync(bin, [...prefix, process.execPath, ...nodeArgs, '-e', SCRIPT], { encoding: 'utf8' });
  }

  it('aborts Node at startup under systemd\'s seccomp filter, and --jitless runs under it', async (ctx) => {
    const bin = await mdwe(ctx);
    const refused = underMdwe(bin, [], []);
    if (refused.status === 3) ctx.skip(`seccomp filters are refused here: ${refused.stderr.trim()}`);
    expect(refused.stdout).toBe('');
    expect(refused.signal ?? refused.status).not.toBe(0);
    expect(refused.stderr).toContain('v8::base::OS::SetPermissions');
    const jitless = underMdwe(bin, [], ['--jitless']);
    expect(jitless.status, jitless.stderr).toBe(0);
    expect(jitless.stdout.trim()).toBe('499999500000');
  });

  it('aborts Node at startup under the kernel\'s PR_SET_MDWE', async (ctx) => {
    const bin = await mdwe(ctx);
    const refused = underMdwe(bin, ['prctl'], []);
    if (refused.status === 3) ctx.skip(`this kernel has no PR_SET_MDWE (Linux 6.3+): ${refused.stderr.trim()}`);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toContain('v8::base::OS::SetPermissions');
  });
});
