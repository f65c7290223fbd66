import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rename, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLI, freePort, killServes, Serve, until, type LogLine } from './serve.js';
import { accessTokenPlugin, allowRule, API, ID_TOKEN, LoopbackIssuer, oidcPlugin, TestClient, TOKEN_EXCHANGE } from './support.js';

const run = promisify(execFile);
/** Concurrent clients exchanging tokens while the config changes under them. */
const CLIENTS = 6;

let idp: LoopbackIssuer;
let client: TestClient;
let newcomer: TestClient;
beforeAll(async () => {
  idp = await LoopbackIssuer.start();
  client = await TestClient.create('reload-client');
  newcomer = await TestClient.create('new-client');
});
afterAll(async () => {
  await idp?.close();
});
afterEach(killServes);

interface Deployment {
  readonly dir: string;
  readonly path: string;
  readonly issuer: string;
  readonly port: number;
  /** Writes the config as an editor does: a new file renamed over the old one. */
  write(config: Record<string, unknown>): Promise<void>;
}

async function deployment(): Promise<Deployment> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'tessera-reload-'));
  // JSON is YAML: the name the operations guide uses.
  const path = join(dir, 'broker.yaml');
  return {
    dir,
    path,
    port,
    issuer: `http://127.0.0.1:${port}`,
    async write(config) {
      await writeFile(`${path}.tmp`, JSON.stringify(config, null, 2));
      await rename(`${path}.tmp`, path);
    },
  };
}

/** A dev.yaml-like config; `scopes` and `clients` are what the reloads change. */
function config(at: Deployment, overrides: { scopes?: string[]; clients?: TestClient[]; extra?: Record<string, unknown> } = {}): Record<string, unknown> {
  return {
    issuer: at.issuer,
    dataDir: 'data',
    keys: { generate: true },
    network: { allowLoopbackHttp: true },
    clients: (overrides.clients ?? [client]).map((each) => each.config(['token_exchange'])),
    plugins: [oidcPlugin({ issuer: idp.issuer }), accessTokenPlugin],
    policy: { rules: [allowRule(idp.issuer, { scopes: overrides.scopes ?? ['read'] })] },
    audit: { destination: { file: 'audit.jsonl' } },
    log: { level: 'info' },
    ...overrides.extra,
  };
}

interface Exchange {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

async function exchange(at: Deployment, options: { scope?: string; as?: TestClient } = {}): Promise<Exchange> {
  const subjectToken = await idp.mint({ sub: 'alice', aud: at.issuer }, { expiresIn: 3600 });
  const response = await fetch(`${at.issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: TOKEN_EXCHANGE,
      subject_token: subjectToken,
      subject_token_type: ID_TOKEN,
      audience: API,
      scope: options.scope ?? 'read',
      ...(await (options.as ?? client).auth(at.issuer)),
    }),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

interface Load {
  /** `sentAt` when the request left, `at` when its answer was checked. */
  readonly answered: { sentAt: number; at: number; token: string }[];
  readonly failures: string[];
  stop(): Promise<void>;
}

/** CLIENTS loops of scope=read exchanges, each answer checked by `check` (which may throw). */
function load(at: Deployment, check: (token: string) => Promise<void> = async () => undefined): Load {
  const answered: { sentAt: number; at: number; token: string }[] = [];
  const failures: string[] = [];
  let stopping = false;
  const loops = Array.from({ length: CLIENTS }, async () => {
    while (!stopping) {
      const sentAt = Date.now();
      try {
        const answer = await exchange(at);
        if (answer.status !== 200) failures.push(`HTTP ${answer.status} ${JSON.stringify(answer.body)}`);
        else {
          const token = answer.body.access_token as string;
          await check(token);
          answered.push({ sentAt, at: Date.now(), token });
        }
      } catch (error) {
        failures.push(error instanceof Error ? `${error.name}: ${error.message}` : String(error));
      }
    }
  });
  return {
    answered,
    failures,
    async stop() {
      stopping = true;
      await Promise.all(loops);
    },
  };
}

const outcomes = (serve: Serve, message: string): LogLine[] => serve.logs.filter((line) => line.msg?.startsWith(message));

/** The outcome line that `cause` (a signal, a file write) leads to; counted first, so a fast one is not missed. */
async function outcomeOf(serve: Serve, message: 'reload applied' | 'reload rejected', cause: () => Promise<void>): Promise<LogLine> {
  const before = outcomes(serve, message).length;
  await cause();
  await until(`log "${message}" #${before + 1}`, () => outcomes(serve, message).length > before, 15_000);
  return outcomes(serve, message).at(-1)!;
}

/** The shell commands of one section of docs/operations.md, in order. */
async function documented(heading: string): Promise<string[]> {
  const doc = await readFile(join(import.meta.dirname, '../../docs/operations.md'), 'utf8');
  const start = doc.indexOf(`${heading}\n`);
  expect(start, heading).toBeGreaterThanOrEqual(0);
  const end = doc.slice(start + heading.length).search(/\n#{2,3} /);
  const section = doc.slice(start, end < 0 ? undefined : start + heading.length + end);
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].flatMap((block) => block[1]!.split('\n').map((line) => line.trim()).filter((line) => line !== ''));
}

/** Runs a documented command as shown, with the deployment's directory for /etc/tessera/ and `$pid` set. */
async function runDocumented(line: string, at: Deployment, serve?: Serve): Promise<void> {
  const shown = line.replaceAll('/etc/tessera/', `${at.dir}/`);
  if (shown.startsWith('tessera ')) {
    const words = shown.split(' ').slice(1);
    await run(process.execPath, [CLI, ...words]);
  } else {
    await run('sh', ['-c', shown], { env: { ...process.env, pid: String(serve?.child.pid) } });
  }
}

const RELOADING = '## Reloading config and rotating keys';
const ROTATING = '### Rotating the signing key';

/** The reload commands of the operations guide: validate, then `kill -HUP "$pid"`. */
async function hangUp(serve: Serve, at: Deployment): Promise<void> {
  const commands = await documented(RELOADING);
  expect(commands).toEqual(['tessera config validate /etc/tessera/broker.yaml', 'kill -HUP "$pid"']);
  for (const line of commands) await runDocumented(line, at, serve);
}

/** SIGHUP only: a config about to be rejected would fail `config validate`. */
async function signal(serve: Serve): Promise<void> {
  await run('kill', ['-HUP', String(serve.child.pid)]);
}

async function stop(serve: Serve): Promise<void> {
  serve.child.kill('SIGTERM');
  await serve.exited;
  expect(serve.exit).toMatchObject({ code: 0 });
}

describe('tessera serve reload', () => {
  it('applies a changed policy and client list on SIGHUP, with no failed request under load', async () => {
    const at = await deployment();
    const noWatch = { reload: { watch: false } };
    await at.write(config(at, { extra: noWatch }));
    const serve = await Serve.start(at.path, at.port);
    expect(await exchange(at, { scope: 'write' })).toMatchObject({ status: 400, body: { error: 'invalid_scope' } });
    expect((await exchange(at, { as: newcomer })).status).toBe(401);

    const running = load(at);
    await until('load before the reload', () => running.answered.length >= 30, 20_000);
    await at.write(config(at, { scopes: ['read', 'write'], clients: [client, newcomer], extra: noWatch }));
    const reloadRequested = Date.now();
    const applied = await outcomeOf(serve, 'reload applied', () => hangUp(serve, at));
    expect(applied).toMatchObject({ generation: 2, changed: true });
    expect(applied.digest).not.toBe(applied.previousDigest);
    const countAtReload = running.answered.length;
    await until('load after the reload', () => running.answered.length >= countAtReload + 30, 20_000);
    await running.stop();

    expect(running.failures).toEqual([]);
    expect(running.answered.filter((answer) => answer.at < reloadRequested).length).toBeGreaterThan(0);
    expect(await exchange(at, { scope: 'write' })).toMatchObject({ status: 200 });
    expect((await exchange(at, { as: newcomer })).status).toBe(200);
    // The replaced config's plugins stop once its last request is answered.
    await serve.waitForLog('reload: previous config closed');
    expect(serve.logged('reload: SIGHUP received')).toBeDefined();
    await stop(serve);
  }, 90_000);

  it('rejects a bad config on SIGHUP with the reason logged, and keeps serving the running one', async () => {
    const at = await deployment();
    const noWatch = { reload: { watch: false } };
    await at.write(config(at, { extra: noWatch }));
    const serve = await Serve.start(at.path, at.port);

    // Invalid for the schema: the problem names the file, the line and the path.
    await at.write(config(at, { scopes: ['read', 'write'], extra: { ...noWatch, limits: { maxBodyBytes: -1 } } }));
    const invalid = await outcomeOf(serve, 'reload rejected', () => signal(serve));
    expect(invalid.problems).toEqual([expect.stringMatching(/broker\.yaml:\d+: limits\.maxBodyBytes: /)]);
    expect(invalid).toMatchObject({ generation: 1 });
    expect(await exchange(at, { scope: 'write' })).toMatchObject({ status: 400, body: { error: 'invalid_scope' } });
    expect((await exchange(at)).status).toBe(200);

    // Valid for the schema, but a plugin that cannot be loaded: caught while building, before any swap.
    await at.write({ ...config(at, { scopes: ['read', 'write'], extra: noWatch }), plugins: [oidcPlugin({ issuer: idp.issuer }), { use: '@tessera/plugin-missing', config: {} }] });
    expect((await outcomeOf(serve, 'reload rejected', () => signal(serve))).problems).toEqual([expect.stringContaining('@tessera/plugin-missing')]);
    expect((await exchange(at)).status).toBe(200);

    // A setting only a restart can change: nothing of the new config is applied.
    await at.write(config(at, { scopes: ['read', 'write'], extra: { ...noWatch, listen: { host: '0.0.0.0' } } }));
    expect((await outcomeOf(serve, 'reload rejected', () => signal(serve))).problems).toEqual(['listen: changed, which needs a restart; nothing was applied']);
    expect(await exchange(at, { scope: 'write' })).toMatchObject({ status: 400, body: { error: 'invalid_scope' } });

    await at.write(config(at, { scopes: ['read', 'write'], extra: noWatch }));
    expect(await outcomeOf(serve, 'reload applied', () => hangUp(serve, at))).toMatchObject({ generation: 2 });
    expect((await exchange(at, { scope: 'write' })).status).toBe(200);
    expect(outcomes(serve, 'reload rejected')).toHaveLength(3);
    const metrics = await (await fetch(`${at.issuer}/metrics`)).text();
    expect(metrics).toContain('tessera_config_reloads_total{outcome="rejected"} 3');
    expect(metrics).toContain('tessera_config_reloads_total{outcome="applied"} 1');
    await stop(serve);
  }, 90_000);

  it('applies a config file edit without a signal', async () => {
    const at = await deployment();
    await at.write(config(at));
    const serve = await Serve.start(at.path, at.port);
    await serve.waitForLog('reload: watching the config files');
    expect(await exchange(at, { scope: 'write' })).toMatchObject({ status: 400 });

    expect(await outcomeOf(serve, 'reload applied', () => at.write(config(at, { scopes: ['read', 'write'] })))).toMatchObject({ generation: 2, changed: true });
    expect(serve.logged('reload: a config file changed')).toBeDefined();
    expect((await exchange(at, { scope: 'write' })).status).toBe(200);
    // Debounced: the write and the rename of one save make one reload.
    await new Promise((pause) => setTimeout(pause, 1_000));
    expect(outcomes(serve, 'reload applied')).toHaveLength(1);
    await stop(serve);
  }, 60_000);

  it('rotates the signing key under load: a jose remote-JWKS relying party never fails to verify', async () => {
    const at = await deployment();
    const publishAheadSeconds = 2;
    await mkdir(join(at.dir, 'keys'));
    await run(process.execPath, [CLI, 'keys', 'generate', '--out', join(at.dir, 'keys/2026-11.jwk')]);
    const withKeys = (...files: { path: string; use?: 'publish' }[]) => config(at, { extra: { keys: { files, publishAheadSeconds } } });
    await at.write(withKeys({ path: 'keys/2026-11.jwk' }));
    const serve = await Serve.start(at.path, at.port);

    const keysUrl = new URL(`${at.issuer}/keys`);
    const first = await fetch(keysUrl);
    expect(first.headers.get('cache-control')).toBe(`public, max-age=${publishAheadSeconds}`);
    const [oldKid] = ((await first.json()) as { keys: { kid: string }[] }).keys.map((key) => key.kid);
    // Cached no longer than the broker says; a kid it lacks is not refetched for a minute, so only
    // publishing ahead can keep it verifying.
    const relyingParty = createRemoteJWKSet(keysUrl, { cacheMaxAge: publishAheadSeconds * 1000 / 2, cooldownDuration: 60_000 });
    const verify = async (token: string) => {
      await jwtVerify(token, relyingParty, { issuer: at.issuer, audience: API, typ: 'at+jwt' });
    };
    const running = load(at, verify);
    await until('load before the rotation', () => running.answered.length >= 30, 20_000);
    const beforeRotation = running.answered.at(-1)!.token;

    // The rotation as the operations guide shows it: a new key file, then the config naming it, saved.
    const commands = await documented(ROTATING);
    expect(commands).toEqual(['tessera keys generate --out /etc/tessera/keys/2026-12.jwk']);
    for (const line of commands) await runDocumented(line, at, serve);
    // Dropping the old key while its tokens live is refused: a restarted worker would no longer know it.
    const dropped = await outcomeOf(serve, 'reload rejected', () => at.write(withKeys({ path: 'keys/2026-12.jwk' })));
    // Located like every config problem: at the `keys` block of the file.
    expect(dropped.problems).toEqual([expect.stringMatching(new RegExp(`^\\S+/broker\\.yaml:\\d+: keys: key "${oldKid}" signed tokens valid until .*: keep it in keys.files with use: publish until then$`))]);
    // Kept with use: publish, as the guide has it for a single process.
    const applied = await outcomeOf(serve, 'reload applied', () => at.write(withKeys({ path: 'keys/2026-12.jwk' }, { path: 'keys/2026-11.jwk', use: 'publish' })));
    const newKid = applied.nextKid as string;
    expect(applied).toMatchObject({ signingKid: oldKid, publishedKids: [newKid, oldKid] });
    const takesOver = Date.parse(applied.nextSignsFrom as string);
    await until('load past the switch-over', () => running.answered.some((answer) => answer.sentAt > takesOver + 1_000), 30_000);
    const countAfter = running.answered.length;
    await until('more load on the new key', () => running.answered.length >= countAfter + 30, 20_000);
    await running.stop();

    expect(running.failures).toEqual([]);
    const kidOf = (token: string) => decodeProtectedHeader(token).kid;
    const kids = running.answered.map((answer) => ({ ...answer, kid: kidOf(answer.token) }));
    // Answered before the switch-over: signed by the old key; sent after it: signed by the new one.
    expect(kids.filter((answer) => answer.at < takesOver).every((answer) => answer.kid === oldKid)).toBe(true);
    expect(kids.filter((answer) => answer.sentAt > takesOver).every((answer) => answer.kid === newKid)).toBe(true);
    expect(new Set(kids.map((answer) => answer.kid))).toEqual(new Set([oldKid, newKid]));
    await serve.waitForLog('keys: a new signing key is in use');

    const published = ((await (await fetch(keysUrl)).json()) as { keys: { kid: string }[] }).keys.map((key) => key.kid);
    expect(published).toEqual([newKid, oldKid]);
    // A token signed before the rotation still verifies, for a fresh relying party too.
    await expect(jwtVerify(beforeRotation, createRemoteJWKSet(keysUrl), { issuer: at.issuer, audience: API })).resolves.toBeDefined();
    // And the broker itself still knows it: introspection verifies against every published key.
    const introspected = await fetch(`${at.issuer}/introspect`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: beforeRotation, ...(await client.auth(at.issuer)) }),
    });
    expect(await introspected.json()).toMatchObject({ active: true, client_id: client.id });
    await stop(serve);
  }, 120_000);
});
