import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generatePrivateJwk } from '@tessera/core';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { RedisServer, redisSkipReason } from '../src/redis-server.js';
import { CLI, freePort, killServes, Serve } from './serve.js';
import { accessTokenPlugin, allowRule, API, ASSERTION_TYPE, ID_TOKEN, LoopbackIssuer, oidcPlugin, postToken, startBroker, TestClient, TOKEN_EXCHANGE, type TokenCall } from './support.js';

const skip = redisSkipReason();

interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function tessera(...args: string[]): Promise<CliRun> {
  return new Promise((done) => {
    execFile(process.execPath, [CLI, ...args], (error, stdout, stderr) => done({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }));
  });
}

let idp: LoopbackIssuer;
let client: TestClient;
let admin: TestClient;
let redis: RedisServer;
let dir: string;
/** One config for the whole fleet: one issuer (the load balancer's address), one signing key, one Redis. */
let configPath: string;
let memoryConfigPath: string;
let issuer: string;
let portA: number;
let portB: number;
let a: Serve;
let b: Serve;

async function writeFleetConfig(store: Record<string, unknown>, name: string): Promise<string> {
  const config = {
    issuer,
    dataDir: 'data',
    keys: { files: [{ path: 'signing.jwk' }] },
    network: { allowLoopbackHttp: true },
    clients: [client.config(['token_exchange']), admin.config(['client_credentials'])],
    plugins: [oidcPlugin({ issuer: idp.issuer }), accessTokenPlugin],
    policy: { rules: [allowRule(idp.issuer)] },
    store,
    admin: { clients: [admin.id] },
    // Each process its own audit stream: one hash chain has one writer.
    audit: { destination: 'stderr' },
    log: { level: 'info' },
  };
  const path = join(dir, `${name}.json`);
  await writeFile(path, JSON.stringify(config));
  return path;
}

beforeAll(async () => {
  if (skip) return;
  idp = await LoopbackIssuer.start();
  client = await TestClient.create('fleet-client');
  admin = await TestClient.create('ops-admin');
  redis = await RedisServer.start({ persistent: true });
  dir = await mkdtemp(join(tmpdir(), 'tessera-shared-state-'));
  await writeFile(join(dir, 'signing.jwk'), JSON.stringify(await generatePrivateJwk('ES256')), { mode: 0o600 });
  [portA, portB] = [await freePort(), await freePort()];
  issuer = `http://127.0.0.1:${portA}`;
  configPath = await writeFleetConfig({ kind: 'redis', url: redis.url, keyPrefix: `e2e.${randomUUID()}:`, commandTimeoutMs: 300 }, 'fleet');
  memoryConfigPath = await writeFleetConfig({ kind: 'memory' }, 'memory');
  a = await Serve.start(configPath, portA);
  b = await Serve.start(configPath, portB);
  // Warm: each broker fetches the IdP's keys once, so the concurrent run measures the store, not a cold cache.
  for (const serve of [a, b]) expect((await exchange(serve, 'warm-up')).status).toBe(200);
}, 60_000);
afterAll(async () => {
  killServes();
  await Promise.all([redis?.stop(), idp?.close()]);
});
beforeEach((ctx) => {
  if (skip) ctx.skip(skip);
});

const at = (serve: Serve, path: string) => `http://127.0.0.1:${serve.port}${path}`;

async function exchange(serve: Serve, sub: string, assertion?: string): Promise<TokenCall> {
  return postToken(at(serve, '/token'), {
    grant_type: TOKEN_EXCHANGE,
    subject_token: await idp.mint({ sub, aud: issuer }),
    subject_token_type: ID_TOKEN,
    audience: API,
    client_assertion_type: ASSERTION_TYPE,
    client_assertion: assertion ?? (await client.assertion(issuer)),
  });
}

async function introspect(serve: Serve, token: string): Promise<TokenCall> {
  return postToken(at(serve, '/introspect'), { token, ...(await client.auth(issuer)) });
}

function expectRefused(call: TokenCall, status: number, error: string): void {
  expect(call.status).toBe(status);
  expect(call.body.error).toBe(error);
  expect(call.body.access_token).toBeUndefined();
}

describe('two broker processes on one Redis', () => {
  it('accepts one of 20 concurrent uses of one client assertion across both brokers', async () => {
    const assertion = await client.assertion(issuer);
    const calls = await Promise.all(Array.from({ length: 20 }, (_, index) => exchange(index % 2 === 0 ? a : b, 'alice', assertion)));
    expect(calls.filter((call) => call.status === 200), JSON.stringify(calls.map((call) => [call.status, call.body.error_description]))).toHaveLength(1);
    for (const call of calls.filter((each) => each.status !== 200)) {
      expectRefused(call, 401, 'invalid_client');
      expect(call.text).not.toContain(assertion);
    }
  }, 60_000);

  it('refuses at B, within a second, a token revoked at A (RFC 7009)', async () => {
    const issued = await exchange(a, 'carol');
    expect(issued.status).toBe(200);
    const token = issued.body.access_token as string;
    expect((await introspect(b, token)).body.active).toBe(true);
    const revoked = await postToken(at(a, '/revoke'), { token, ...(await client.auth(issuer)) });
    expect(revoked.status).toBe(200);
    const started = Date.now();
    const seen = await introspect(b, token);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(seen.body).toEqual({ active: false });
  }, 60_000);

  it('applies a kill-switch entry made with tessera revoke on both brokers, to new exchanges and issued tokens', async () => {
    const before = await exchange(a, 'mallory');
    expect(before.status).toBe(200);
    const revoke = await tessera('revoke', '--config', configPath, '--subject', 'mallory', '--issuer', idp.issuer, '--expires-in', '1h', '--reason', 'compromised laptop');
    expect(revoke.code, revoke.stderr).toBe(0);
    expect(revoke.stdout).toMatch(/^revoked subject "mallory" of issuer ".*" until \d{4}-/);
    // The CLI's own audit record, on its standard error.
    expect(revoke.stderr).toContain('"event":"admin"');

    for (const serve of [a, b]) {
      const refused = await exchange(serve, 'mallory');
      expectRefused(refused, 400, 'invalid_request');
      expect(refused.text).not.toContain('mallory');
      expect((await exchange(serve, 'alice')).status).toBe(200);
    }

    const listed = await tessera('revocations', 'list', '--config', configPath, '--json');
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([expect.objectContaining({ kind: 'subject', value: 'mallory', issuer: idp.issuer, reason: 'compromised laptop', createdBy: 'cli' })]);

    const removed = await tessera('revocations', 'delete', '--config', configPath, '--subject', 'mallory', '--issuer', idp.issuer);
    expect(removed.code).toBe(0);
    expect((await exchange(b, 'mallory')).status).toBe(200);
  }, 60_000);

  it('refuses tokens already issued for a revoked subject, client or SPIFFE prefix, as subject tokens and at introspection', async () => {
    const issued = await exchange(a, 'spiffe://example.org/ns/payments/worker');
    expect(issued.status).toBe(200);
    const token = issued.body.access_token as string;
    const revoke = await tessera('revoke', '--config', configPath, '--spiffe-prefix', 'spiffe://example.org/ns/payments', '--expires-in', '10m');
    expect(revoke.code, revoke.stderr).toBe(0);
    expect((await introspect(b, token)).body).toEqual({ active: false });
    expectRefused(await exchange(b, 'spiffe://example.org/ns/payments/worker'), 400, 'invalid_request');
    // A sibling path is not below the prefix.
    expect((await exchange(b, 'spiffe://example.org/ns/paymentsx/worker')).status).toBe(200);
    await tessera('revocations', 'delete', '--config', configPath, '--spiffe-prefix', 'spiffe://example.org/ns/payments');
    expect((await introspect(b, token)).body.active).toBe(true);
  }, 60_000);

  it('serves the admin API only to admin clients with a fresh assertion, and audits it', async () => {
    const url = at(b, '/admin/revocations');
    const create = (authorization?: string) =>
      fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) },
        body: JSON.stringify({ kind: 'client', value: client.id, expiresInSeconds: 600, reason: 'key rotation gone wrong' }),
      });
    expect((await create()).status).toBe(401);
    expect((await create(`Bearer ${await client.assertion(issuer)}`)).status).toBe(401);
    const replayed = await admin.assertion(issuer);
    const created = await create(`Bearer ${replayed}`);
    expect(created.status).toBe(201);
    expect(((await created.json()) as { revocation: Record<string, unknown> }).revocation).toMatchObject({ kind: 'client', value: client.id, createdBy: admin.id });
    expect((await create(`Bearer ${replayed}`)).status).toBe(401);

    expectRefused(await exchange(a, 'alice'), 400, 'invalid_request');
    const list = await fetch(url, { headers: { authorization: `Bearer ${await admin.assertion(issuer)}` } });
    expect(((await list.json()) as { revocations: unknown[] }).revocations).toEqual([expect.objectContaining({ kind: 'client', value: client.id })]);
    const removed = await fetch(`${url}?kind=client&value=${encodeURIComponent(client.id)}`, { method: 'DELETE', headers: { authorization: `Bearer ${await admin.assertion(issuer)}` } });
    expect(await removed.json()).toEqual({ removed: true });
    expect((await exchange(a, 'alice')).status).toBe(200);
    const audited = b.logs.filter((line) => line.event === 'admin');
    expect(audited.map((line) => [line.action, line.decision])).toEqual([
      ['revocation.create', 'deny'],
      ['revocation.create', 'deny'],
      ['revocation.create', 'allow'],
      ['revocation.create', 'deny'],
      ['revocation.list', 'allow'],
      ['revocation.delete', 'allow'],
    ]);
  }, 60_000);

  it('keeps replay and revocation state across a broker restart', async () => {
    const assertion = await client.assertion(issuer);
    expect((await exchange(a, 'dave', assertion)).status).toBe(200);
    const issued = await exchange(a, 'erin');
    const token = issued.body.access_token as string;
    await postToken(at(a, '/revoke'), { token, ...(await client.auth(issuer)) });

    a.child.kill('SIGTERM');
    await a.exited;
    a = await Serve.start(configPath, portA);
    expectRefused(await exchange(a, 'dave', assertion), 401, 'invalid_client');
    expect((await introspect(a, token)).body).toEqual({ active: false });
  }, 60_000);

  it('fails closed with 503 while Redis is down, and recovers by itself when it returns', async () => {
    const issued = await exchange(a, 'frank');
    const token = issued.body.access_token as string;
    await redis.stop();
    try {
      const refused = await exchange(a, 'frank');
      expectRefused(refused, 503, 'temporarily_unavailable');
      expect(refused.headers.get('retry-after')).toMatch(/^\d+$/);
      expectRefused(await introspect(b, token), 503, 'temporarily_unavailable');
      expect((await postToken(at(b, '/revoke'), { token, ...(await client.auth(issuer)) })).status).toBe(503);
      const ready = await fetch(at(a, '/readyz'));
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { checks: Record<string, string> }).checks.store).not.toBe('ok');
      expect((await tessera('revoke', '--config', configPath, '--client', 'x', '--expires-in', '1m')).code).toBe(1);
    } finally {
      await redis.restart();
    }
    let status = 0;
    for (let attempt = 0; attempt < 100 && status !== 200; attempt++) {
      status = (await exchange(a, 'frank')).status;
      if (status !== 200) await new Promise((done) => setTimeout(done, 100));
    }
    expect(status).toBe(200);
    expect((await fetch(at(a, '/readyz'))).status).toBe(200);
    // B reconnects on its own jittered schedule, not in step with A: wait until it is back too.
    let readyB = 0;
    for (let attempt = 0; attempt < 100 && readyB !== 200; attempt++) {
      readyB = (await fetch(at(b, '/readyz'))).status;
      if (readyB !== 200) await new Promise((done) => setTimeout(done, 100));
    }
    expect(readyB).toBe(200);
    // The append-only file kept what was written before the outage.
    expect((await introspect(b, token)).body.active).toBe(true);
  }, 60_000);
});

describe('docs/operations.md: the kill-switch commands it shows', () => {
  it('run as shown against the fleet (its config and IdP in place of the examples)', async () => {
    const doc = await readFile(join(import.meta.dirname, '../../docs/operations.md'), 'utf8');
    const section = doc.slice(doc.indexOf('## Revoking: the kill switch'), doc.indexOf('\n## ', doc.indexOf('## Revoking: the kill switch') + 1));
    const block = /```sh\n([\s\S]*?)```/.exec(section)![1]!;
    const commands = block.trim().split('\n');
    expect(commands.map((line) => line.split(' ').slice(0, 2).join(' '))).toEqual(['tessera revoke', 'tessera revoke', 'tessera revocations', 'tessera revocations']);
    const outputs: string[] = [];
    for (const line of commands) {
      const words = [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((match) => match[1] ?? match[2]!).slice(1);
      const run = await tessera(...words.map((word) => (word === 'broker.json' ? configPath : word === 'https://idp.example.com' ? idp.issuer : word)));
      expect(run.code, `${line}: ${run.stderr}`).toBe(0);
      outputs.push(run.stdout);
    }
    expect(JSON.parse(outputs[2]!).map((entry: { kind: string }) => entry.kind).sort()).toEqual(['spiffe-prefix', 'subject']);
    expect(outputs[3]).toContain('removed subject "mallory"');
    await tessera('revocations', 'delete', '--config', configPath, '--spiffe-prefix', 'spiffe://example.org/ns/payments');
  }, 60_000);
});

describe('a memory store', () => {
  it('cannot be revoked from another process: tessera revoke says so and exits non-zero', async () => {
    const run = await tessera('revoke', '--config', memoryConfigPath, '--subject', 'alice', '--expires-in', '1h');
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('store.kind is memory');
    expect((await tessera('revocations', 'list', '--config', memoryConfigPath)).code).toBe(1);
  }, 60_000);

  it('refuses an admin client that does not prove a key', async () => {
    const path = join(dir, 'weak-admin.json');
    await writeFile(path, JSON.stringify({ issuer, keys: { files: [{ path: 'signing.jwk' }] }, clients: [{ id: 'public', auth: { method: 'none' } }], admin: { clients: ['public', 'nobody'] } }));
    const run = await tessera('config', 'validate', path);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('admin.clients[0]: "public" is not a configured private_key_jwt client');
    expect(run.stderr).toContain('admin.clients[1]');
  }, 60_000);

  it('refuses a replicas intent at startup', async () => {
    const path = await writeFleetConfig({ kind: 'memory', replicas: 3 }, 'replicas');
    const run = await tessera('config', 'validate', path);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('store.replicas');
  }, 60_000);
});


describe('a Redis that may evict keys', () => {
  it('keeps the broker not ready, saying why, until maxmemory-policy is noeviction', async () => {
    const evicting = await RedisServer.start({ maxmemoryPolicy: 'volatile-lru' });
    try {
      for (const [server, status, store] of [
        [evicting, 503, 'redis maxmemory-policy must be noeviction'],
        [redis, 200, 'ok'],
      ] as const) {
        const running = await startBroker(() => ({ store: { kind: 'redis', url: server.url, keyPrefix: `e2e.${randomUUID()}:` } }));
        try {
          const ready = await fetch(`${running.issuer}/readyz`);
          expect(ready.status).toBe(status);
          expect(((await ready.json()) as { checks: Record<string, string> }).checks.store).toBe(store);
        } finally {
          await running.close();
        }
      }
    } finally {
      await evicting.stop();
    }
  }, 60_000);
});
