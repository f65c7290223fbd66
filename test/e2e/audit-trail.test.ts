import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rename, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLI, freePort, killServes, Serve, until } from './serve.js';
import { accessTokenPlugin, allowRule, API, ID_TOKEN, LoopbackIssuer, oidcPlugin, TestClient, TOKEN_EXCHANGE, servedBroker } from './support.js';

let idp: LoopbackIssuer;
let client: TestClient;
beforeAll(async () => {
  idp = await LoopbackIssuer.start();
  client = await TestClient.create('audit-client');
});
afterAll(async () => {
  await idp?.close();
});
afterEach(killServes);

async function writeConfig(port: number, audit: Record<string, unknown>): Promise<{ path: string; dir: string; issuer: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-audit-e2e-'));
  const issuer = `http://127.0.0.1:${port}`;
  const config = {
    issuer,
    ...servedBroker(idp.issuer, client),
    audit,
    log: { level: 'info' },
  };
  const path = join(dir, 'broker.json');
  await writeFile(path, JSON.stringify(config));
  return { path, dir, issuer };
}

interface Exchange {
  readonly status: number;
  readonly retryAfter: string | null;
  readonly body: { access_token?: string; error?: string };
}

async function exchange(issuer: string, subjectToken: string): Promise<Exchange> {
  const response = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: subjectToken, subject_token_type: ID_TOKEN, audience: API, scope: 'read', ...(await client.auth(issuer)) }),
  });
  return { status: response.status, retryAfter: response.headers.get('retry-after'), body: (await response.json()) as Exchange['body'] };
}

async function readyz(issuer: string): Promise<{ status: number; body: { status: string; checks?: Record<string, string> } }> {
  const response = await fetch(`${issuer}/readyz`);
  return { status: response.status, body: (await response.json()) as { status: string; checks?: Record<string, string> } };
}

const jtiOf = (token: string) => (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as { jti: string }).jti;

function verify(...files: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [CLI, 'audit', 'verify', ...files], (error, stdout, stderr) => done({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }));
  });
}

async function auditLines(file: string): Promise<Record<string, unknown>[]> {
  return (await readFile(file, 'utf8'))
    .split('\n')
    .filter((line) => line.endsWith('}'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** A 503 that hands out nothing: the refusal every sink failure must give. */
function expectRefused(answer: Exchange): void {
  expect(answer.status).toBe(503);
  expect(answer.retryAfter).toBe('5');
  expect(answer.body).toEqual({ error: 'temporarily_unavailable', error_description: 'temporarily unavailable, retry later' });
}

describe('the audit trail of tessera serve', () => {
  it('kill -9 under load: every token a client received has its allow record, and the chain verifies, across a restart too', async () => {
    const port = await freePort();
    const { path, dir, issuer } = await writeConfig(port, { destination: { file: 'audit.jsonl' } });
    const file = join(dir, 'audit.jsonl');
    const serve = await Serve.start(path, port);
    const subjectToken = await idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 3600 });

    const received: string[] = [];
    const load = Array.from({ length: 16 }, async () => {
      while (serve.exit === undefined) {
        try {
          const answer = await exchange(issuer, subjectToken);
          if (answer.status === 200) received.push(answer.body.access_token!);
        } catch {
          // The connection died with the process: nothing was received.
        }
      }
    });
    await until('tokens under load', () => received.length >= 300, 30_000);
    serve.child.kill('SIGKILL');
    await serve.exited;
    await Promise.all(load);

    const allowed = new Set((await auditLines(file)).filter((record) => record.decision === 'allow').map((record) => (record.issued as { jti: string }).jti));
    const missing = received.map(jtiOf).filter((jti) => !allowed.has(jti));
    expect(missing).toEqual([]);
    expect(received.length).toBeGreaterThanOrEqual(300);
    const afterKill = await verify(file);
    expect(afterKill.code, afterKill.stderr).toBe(0);
    expect(afterKill.stdout).toMatch(/^chain intact: \d+ records in 1 file \(1 new chain begun/);

    // The restart continues the chain: still one chain, intact.
    const again = await Serve.start(path, port);
    expect((await exchange(issuer, subjectToken)).status).toBe(200);
    again.child.kill('SIGTERM');
    await again.exited;
    expect(again.exit).toMatchObject({ code: 0 });
    const afterRestart = await verify(file);
    expect(afterRestart.code, afterRestart.stderr).toBe(0);
    expect(afterRestart.stdout).toMatch(/^chain intact: \d+ records in 1 file \(1 new chain begun(, |\)\n$)/);
    expect((await auditLines(file)).filter((record) => record.event === 'chain')).toHaveLength(1);
  }, 120_000);

  it('logrotate: rename the file, SIGHUP, and the chain verifies across both files', async () => {
    const port = await freePort();
    const { path, dir, issuer } = await writeConfig(port, { destination: { file: 'audit.jsonl' }, fsync: 'always' });
    const file = join(dir, 'audit.jsonl');
    const serve = await Serve.start(path, port);
    const subjectToken = await idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 3600 });
    expect((await exchange(issuer, subjectToken)).status).toBe(200);
    await rename(file, `${file}.1`);
    serve.child.kill('SIGHUP');
    expect(await serve.waitForLog('audit: file reopened')).toMatchObject({ reason: 'requested' });
    expect((await exchange(issuer, subjectToken)).status).toBe(200);
    expect((await auditLines(file)).map((record) => record.seq)).toEqual([3]);
    expect(await verify(`${file}.1`, file)).toEqual({ code: 0, stdout: 'chain intact: 3 records in 2 files (1 new chain begun)\n', stderr: '' });
    serve.child.kill('SIGTERM');
    await serve.exited;
  }, 60_000);

  it('a broken stdout pipe: exchanges get 503 and no token, /readyz says why, the process keeps running', async () => {
    const port = await freePort();
    const { path, issuer } = await writeConfig(port, { destination: 'stdout' });
    const serve = await Serve.start(path, port);
    const subjectToken = await idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 3600 });
    expect((await exchange(issuer, subjectToken)).status).toBe(200);
    serve.child.stdout!.destroy();

    expectRefused(await exchange(issuer, subjectToken));
    expect(await serve.waitForLog('audit: sink broken')).toMatchObject({ reason: 'write failed: EPIPE' });
    expect(await serve.waitForLog('request refused: its audit record was not stored')).toMatchObject({ event: 'token', decision: 'allow', reason: 'write failed: EPIPE' });
    expectRefused(await exchange(issuer, subjectToken));
    expect(await readyz(issuer)).toEqual({ status: 503, body: { status: 'unavailable', checks: expect.objectContaining({ audit: 'write failed: EPIPE' }) } });
    expect(serve.exit).toBeUndefined();
  }, 60_000);

  it('a full disk: not ready, exchanges get 503 and no token', async () => {
    const port = await freePort();
    const { path, issuer } = await writeConfig(port, { destination: { file: '/dev/full' } });
    const serve = await Serve.start(path, port);
    const subjectToken = await idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 3600 });
    expect(await readyz(issuer)).toEqual({ status: 503, body: { status: 'unavailable', checks: expect.objectContaining({ keys: 'ok', audit: 'write failed: ENOSPC' }) } });
    expectRefused(await exchange(issuer, subjectToken));
    expect(serve.logged('audit: sink broken')).toMatchObject({ reason: 'write failed: ENOSPC' });
  }, 60_000);

  it('a stalled stdout reader: 503s within the write bound, recovery once it reads, and a shutdown on a stuck sink exits 1', async () => {
    const port = await freePort();
    const { path, issuer } = await writeConfig(port, { destination: 'stdout', writeTimeoutMs: 200, closeTimeoutMs: 300 });
    const serve = await Serve.start(path, port);
    const subjectToken = await idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 3600 });
    serve.child.stdout!.pause();

    // Tokens flow until the pipe's buffer is full; then the write stalls and requests are refused.
    let refused: Exchange | undefined;
    for (let sent = 0; sent < 5_000 && !refused; sent += 16) {
      const answers = await Promise.all(Array.from({ length: 16 }, () => exchange(issuer, subjectToken)));
      refused = answers.find((answer) => answer.status !== 200);
    }
    expectRefused(refused!);
    expect((await readyz(issuer)).body.checks).toMatchObject({ audit: 'write not completed within 200 ms' });

    serve.child.stdout!.resume();
    await until('the sink to recover', () => serve.logged('audit: sink writable again') !== undefined);
    expect((await exchange(issuer, subjectToken)).status).toBe(200);
    expect((await readyz(issuer)).status).toBe(200);

    serve.child.stdout!.pause();
    for (let sent = 0; sent < 5_000; sent += 16) {
      const answers = await Promise.all(Array.from({ length: 16 }, () => exchange(issuer, subjectToken)));
      if (answers.some((answer) => answer.status !== 200)) break;
    }
    const signalledAt = Date.now();
    serve.child.kill('SIGTERM');
    await serve.exited;
    expect(serve.exit).toMatchObject({ code: 1 });
    expect(serve.exit!.at - signalledAt).toBeLessThan(5_000);
    expect(serve.logged('audit: the sink did not finish writing in time at shutdown')).toMatchObject({ timeoutMs: 300 });
    expect(serve.logged('shutdown: broker closed, audit records not all written')).toBeDefined();
    expect(serve.logged('shutdown: exiting')).toMatchObject({ status: 1 });
  }, 90_000);
});
