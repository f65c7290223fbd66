import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { shellBlocks, type ShellBlock } from '../src/doc-shell-blocks.js';
import { RedisServer, redisSkipReason } from '../src/redis-server.js';
import { CLI, freePort, killServes, Serve, until } from './serve.js';

const REPO = resolve(import.meta.dirname, '../..');
const DOC = 'docs/operations.md';
const doc = await readFile(join(REPO, DOC), 'utf8');
const run = promisify(execFile);

const blocks = shellBlocks(doc);
const blockIn = (section: string): ShellBlock => blocks.find((block) => block.section.startsWith(section))!;

describe(`${DOC}: every command is run by a test`, () => {
  it('marks each shell block with the test that runs it, and that test reads the guide or holds the command', async () => {
    expect(blocks.length).toBeGreaterThan(5);
    const problems: string[] = [];
    for (const block of blocks) {
      const where = `${DOC}:${block.line}`;
      if (!block.testedBy) {
        problems.push(`${where}: no <!-- tested: FILE --> line above the block`);
        continue;
      }
      const path = join(REPO, block.testedBy);
      if (!existsSync(path)) {
        problems.push(`${where}: ${block.testedBy} does not exist`);
        continue;
      }
      const test = await readFile(path, 'utf8');
      if (test.includes(DOC)) continue;
      for (const command of block.commands) if (!test.includes(command)) problems.push(`${where}: ${block.testedBy} neither reads ${DOC} nor runs \`${command}\``);
    }
    expect(problems).toEqual([]);
  });
});

describe(`${DOC}: probes and drain, as written`, () => {
  afterEach(killServes);

  it('answers the probe commands while ready, then drains and exits 0 on the stop command', async () => {
    const port = await freePort();
    const dir = await mkdtemp(join(tmpdir(), 'tessera-docs-ops-'));
    const config = join(dir, 'broker.yaml');
    await writeFile(config, `issuer: http://127.0.0.1:${port}\nkeys: { generate: true }\ndataDir: data\naudit: { destination: { file: audit.jsonl } }\n`);
    const serve = await Serve.start(config, port);

    const probes = blockIn('Probes').commands.map((command) => command.replace('127.0.0.1:8080', `127.0.0.1:${port}`));
    expect(probes).toHaveLength(2);
    const [ready, live] = await Promise.all(probes.map((command) => run('sh', ['-c', command])));
    expect(JSON.parse(ready!.stdout)).toEqual({ status: 'ready', checks: { keys: 'ok', audit: 'ok', issuers: 'ok', store: 'ok' } });
    expect(JSON.parse(live!.stdout)).toEqual({ status: 'ok' });
    // The guide's example answer is the one a fresh broker gives.
    expect(doc).toContain(`\`${ready!.stdout.trim()}\``);

    const [stop] = blockIn('Stopping').commands;
    await run('sh', ['-c', stop!], { env: { ...process.env, pid: String(serve.child.pid) } });
    await serve.exited;
    expect(serve.exit).toMatchObject({ code: 0, signal: null });
    expect(serve.logged('shutdown: signal received')).toMatchObject({ signal: 'SIGTERM' });
    expect(serve.logged('shutdown: exiting')).toMatchObject({ status: 0 });
  }, 60_000);
});

/** Runs one documented line as shown: `tessera …` through the CLI, anything else through sh, `$pid` set. */
async function runShown(line: string, options: { cwd?: string; pid?: number; replace?: readonly [string, string] } = {}): Promise<{ stdout: string }> {
  const shown = options.replace ? line.replaceAll(options.replace[0], options.replace[1]) : line;
  const env = { ...process.env, ...(options.pid !== undefined ? { pid: String(options.pid) } : {}) };
  if (shown.startsWith('tessera ')) return run(process.execPath, [CLI, ...shown.split(' ').slice(1)], { cwd: options.cwd, env });
  return run('sh', ['-c', shown], { cwd: options.cwd, env });
}

/** A request the broker refuses and audits: enough to put a record in the file. */
const audited = (port: number) => fetch(`http://127.0.0.1:${port}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'grant_type=unknown' });

describe(`${DOC}: the audit trail commands, as written`, () => {
  afterEach(killServes);

  it('rotates the file with mv and SIGHUP, then verifies the chain across both files', async () => {
    const port = await freePort();
    const dir = await mkdtemp(join(tmpdir(), 'tessera-docs-audit-'));
    const config = join(dir, 'broker.yaml');
    await writeFile(config, `issuer: http://127.0.0.1:${port}\nkeys: { generate: true }\ndataDir: data\naudit: { destination: { file: ${join(dir, 'audit.jsonl')} } }\n`);
    const serve = await Serve.start(config, port);
    const section = blocks.filter((block) => block.section === 'The audit trail');
    const [verifyBlock, rotateBlock] = section;
    expect(verifyBlock!.commands).toEqual(['tessera audit verify /var/log/tessera/audit.jsonl.1 /var/log/tessera/audit.jsonl']);
    const paths = ['/var/log/tessera/', `${dir}/`] as const;

    expect((await audited(port)).status).toBe(400);
    for (const line of rotateBlock!.commands) await runShown(line, { pid: serve.child.pid!, replace: paths });
    await serve.waitForLog('audit: file reopened');
    expect((await audited(port)).status).toBe(400);
    expect(existsSync(join(dir, 'audit.jsonl.1'))).toBe(true);

    const { stdout } = await runShown(verifyBlock!.commands[0]!, { replace: paths });
    expect(stdout).toMatch(/^chain intact: \d+ records in 2 files/);
  }, 60_000);
});

describe(`${DOC}: workers, as written`, () => {
  const skip = redisSkipReason();
  let redis: RedisServer | undefined;
  let fleet: Serve | undefined;
  afterEach(async () => {
    if (fleet?.exit === undefined) fleet?.child.kill('SIGKILL');
    await redis?.stop();
  });

  it.skipIf(skip !== undefined)('serves one port from two workers on a Redis store, and drains both on SIGTERM', async () => {
    redis = await RedisServer.start();
    const port = await freePort();
    const dir = await mkdtemp(join(tmpdir(), 'tessera-docs-workers-'));
    await writeFile(join(dir, 'tessera.yaml'), `issuer: http://127.0.0.1:${port}\nkeys: { generate: true }\ndataDir: data\nstore: { kind: redis, url: ${redis.url} }\n`);
    const [command] = blockIn('Workers').commands;
    expect(command).toBe('tessera serve --config tessera.yaml --workers 2');
    const child = spawn(process.execPath, [CLI, ...command!.split(' ').slice(1)], { cwd: dir, env: { ...process.env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'] });
    const serve = (fleet = new Serve(child, port));
    await until('the listening line', () => serve.stderr.includes('tessera listening on') || serve.exit !== undefined, 60_000);
    expect(serve.exit).toBeUndefined();
    const answers = await Promise.all(Array.from({ length: 8 }, () => fetch(`http://127.0.0.1:${port}/readyz`).then((response) => response.status)));
    expect(answers.every((status) => status === 200)).toBe(true);
    child.kill('SIGTERM');
    await serve.exited;
    expect(serve.exit).toMatchObject({ code: 0 });
    // Both workers drained: each logs its own shutdown.
    const pids = new Set(serve.logs.filter((line) => line.msg === 'shutdown: exiting').map((line) => line.pid));
    expect(pids.size).toBe(2);
  }, 90_000);
});
