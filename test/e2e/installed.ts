import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { readdir } from 'node:fs/promises';
import { delimiter, dirname, join, resolve, sep } from 'node:path';
import { Serve, until } from './serve.js';

/** The repository root: packing and the bundle script run from here. */
export const REPO = resolve(import.meta.dirname, '../..');

/**
 * The environment of every command run against an install: this test's Node (24) first on PATH, so npm,
 * lifecycle scripts and `#!/usr/bin/env node` bins all run on the Node the project runs on. Variables a
 * parent npm, turbo or vitest set are dropped: a user's shell has none of them.
 */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(npm_|VITEST|VITE_|TURBO_)/i.test(key) || ['INIT_CWD', 'NODE_OPTIONS', 'NODE_ENV', 'TEST'].includes(key)) continue;
    env[key] = value;
  }
  env.PATH = [dirname(process.execPath), process.env.PATH ?? ''].join(delimiter);
  // npm finds its global config beside the Node that runs it; run on Node 24 from node_modules it would
  // miss the machine's (a registry CA there, say) and fail TLS to the registry. Point it back.
  const globalConfig = machineNpmGlobalConfig();
  if (globalConfig) env.npm_config_globalconfig = globalConfig;
  return { ...env, ...extra };
}

let machineGlobalConfig: string | null | undefined;

/** The global npmrc of the machine's own npm (the one on PATH without node_modules), if it has one. */
function machineNpmGlobalConfig(): string | undefined {
  if (machineGlobalConfig === undefined) {
    const path = (process.env.PATH ?? '').split(delimiter).filter((dir) => !dir.includes(`${sep}node_modules${sep}`));
    try {
      // Outside any workspace: `npm config` refuses to run in one.
      const found = execFileSync('npm', ['config', 'get', 'globalconfig'], { cwd: tmpdir(), env: { HOME: process.env.HOME ?? '', PATH: path.join(delimiter) }, encoding: 'utf8', timeout: 20_000 }).trim();
      machineGlobalConfig = found !== '' && existsSync(found) ? found : null;
    } catch {
      machineGlobalConfig = null;
    }
  }
  return machineGlobalConfig ?? undefined;
}

export interface Ran {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly seconds: number;
}

/** Runs a command to completion; a non-zero exit is returned, not thrown, so tests can show stderr. */
export function run(command: string, args: readonly string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<Ran> {
  const started = Date.now();
  return new Promise((done, fail) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 240_000);
    child.once('error', fail);
    child.once('close', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr, seconds: (Date.now() - started) / 1000 });
    });
  });
}

/** `npm ...` as a user runs it, from the npm cache where it can (third-party packages still come from the registry). */
export function npm(args: readonly string[], cwd: string, timeoutMs?: number): Promise<Ran> {
  return run('npm', [...args, '--no-audit', '--no-fund', '--prefer-offline'], { cwd, ...(timeoutMs ? { timeoutMs } : {}) });
}

/** Throws with the command's output when it failed: the test then shows why. */
export function succeeded(what: string, ran: Ran): Ran {
  if (ran.code !== 0) throw new Error(`${what} exited ${ran.code}\n--- stdout\n${ran.stdout}\n--- stderr\n${ran.stderr}`);
  return ran;
}

/** Every copy of a package in an install tree (more than one means a plugin could get its own). */
export async function copiesOf(root: string, name: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (modules: string): Promise<void> => {
    let entries: string[];
    try {
      entries = await readdir(modules);
    } catch {
      return;
    }
    for (const entry of entries) {
      const scoped = entry.startsWith('@') ? (await readdir(join(modules, entry))).map((inner) => `${entry}/${inner}`) : [entry];
      for (const pkg of scoped) {
        if (pkg === name) found.push(join(modules, pkg));
        await walk(join(modules, pkg, 'node_modules'));
      }
    }
  };
  await walk(join(root, 'node_modules'));
  return found;
}

/** `tessera serve` from an installed package's bin, with cwd `cwd`; resolves once it listens. */
export async function serveInstalled(bin: string, configPath: string, cwd: string, port: number): Promise<Serve> {
  const child = spawn(process.execPath, [bin, 'serve', '--config', configPath], { cwd, env: cleanEnv({ PORT: String(port) }), stdio: ['ignore', 'pipe', 'pipe'] });
  const serve = new Serve(child, port);
  await until('the listening line', () => serve.stderr.includes('tessera listening on') || serve.exit !== undefined, 30_000);
  if (serve.exit) throw new Error(`tessera serve exited ${serve.exit.code}: ${serve.stderr}`);
  return serve;
}

/** Stops a served broker (SIGTERM, SIGKILL if it lingers). */
export async function stop(serve: Serve | undefined): Promise<void> {
  if (!serve || serve.exit) return;
  serve.child.kill('SIGTERM');
  const timer = setTimeout(() => serve.child.kill('SIGKILL'), 5_000);
  await serve.exited;
  clearTimeout(timer);
}
