/**
 * Tessera as the bench runs it: the real CLI (`tessera serve --config`), the way an operator starts it,
 * with audit records appended to a file (production's sink, default fsync), a memory store, one
 * process pinned to one core. Subject tokens come from a loopback OIDC issuer in the bench process
 * (its JWKS is fetched once and cached by the broker, as in production).
 */
import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import type { LoopbackIssuer, TestKey } from '@tessera/plugin-testkit';
import { freePort } from '../free-port.js';
import { Es256Signer } from './jws.js';
import { spawnPinned, type BenchScenario, type BenchSystem, type StartOptions } from './system.js';

export const CLI = fileURLToPath(new URL('../../../core/dist/cli/main.js', import.meta.url));
export const API = 'https://api.example.test';
/** The warm scenario's agent asks for tokens to several APIs with one subject token. */
const WARM_AUDIENCES = [API, 'https://a.example.test', 'https://b.example.test', 'https://c.example.test'];
const FORM = { 'content-type': 'application/x-www-form-urlencoded' } as const;
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
export const CLIENT_ID = 'bench-client';

export interface TesseraBenchDeps {
  readonly idp: LoopbackIssuer;
  readonly clientKey: TestKey;
}

/** The bench's broker config for an issuer URL: one client, the OIDC and access-token plugins, four rules. */
export function benchConfig(issuer: string, deps: TesseraBenchDeps, dataDir: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const { idp, clientKey } = deps;
  return {
    issuer,
    dataDir,
    keys: { generate: true },
    network: { allowLoopbackHttp: true },
    clients: [{ id: CLIENT_ID, auth: { method: 'private_key_jwt', jwks: { keys: [clientKey.publicJwk] } }, grantTypes: ['token_exchange', 'client_credentials'] }],
    plugins: [{ use: '@tessera/plugin-oidc', config: { issuers: [{ issuer: idp.issuer, jwksUri: idp.jwksUri }] } }, { use: '@tessera/plugin-access-token' }],
    policy: {
      rules: [
        // The client's own broker token, used as actor_token in the delegated scenario.
        { id: 'self', match: { grantTypes: ['token_exchange'], issuers: [idp.issuer], subjects: [CLIENT_ID] }, grant: { audiences: [CLIENT_ID], maxLifetimeSeconds: 3600, allowLifetimeBeyondSubject: true } },
        { id: 'exchange', match: { grantTypes: ['token_exchange'], issuers: [idp.issuer] }, grant: { audiences: WARM_AUDIENCES, scopes: ['read'], maxLifetimeSeconds: 600 } },
        {
          id: 'delegated',
          match: { grantTypes: ['token_exchange'], issuers: [idp.issuer], actor: { trust: ['broker'], subjects: [CLIENT_ID] }, when: "subject.subject == 'alice' && request.chainDepth <= 2" },
          grant: { audiences: [API], scopes: ['read'], maxLifetimeSeconds: 600, delegation: { allowed: true }, claims: { copy: ['email'] } },
        },
        { id: 'client-itself', match: { clients: [CLIENT_ID], grantTypes: ['client_credentials'] }, grant: { audiences: [API], scopes: ['read'], maxLifetimeSeconds: 300 } },
      ],
    },
    audit: { destination: { file: join(dataDir, 'audit.jsonl') } },
    log: { level: 'warn' },
    ...extra,
  };
}

/** `tessera serve` on a free port with `config`; resolves once it listens. */
export async function serveCli(config: (issuer: string) => Record<string, unknown>, options: StartOptions & { args?: readonly string[]; env?: Record<string, string> }): Promise<{ child: ChildProcess; issuer: string }> {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const path = join(options.workDir, 'broker.json');
  await writeFile(path, JSON.stringify(config(issuer)));
  const child = spawnPinned(options.cpu, process.execPath, [CLI, 'serve', '--config', path, ...(options.args ?? [])], {
    env: { ...process.env, PORT: String(port), ...options.env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const deadline = Date.now() + 60_000;
  while (!stderr.includes('tessera listening on')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`tessera serve did not start: ${stderr.slice(-2000)}`);
    }
    await new Promise((done) => setTimeout(done, 20));
  }
  return { child, issuer };
}

export function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return Promise.resolve();
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  return exited.finally(() => clearTimeout(killer));
}

/** Request bodies for the bench client against one broker: every body carries a fresh client assertion. */
export class TesseraBodies {
  readonly #client: Es256Signer;
  readonly #idp: Es256Signer;

  constructor(
    private readonly issuer: string,
    private readonly deps: TesseraBenchDeps,
  ) {
    this.#client = new Es256Signer(deps.clientKey.privateJwk);
    this.#idp = new Es256Signer(deps.idp.key.privateJwk);
  }

  get tokenEndpoint(): string {
    return `${this.issuer}/token`;
  }

  /** An ID token from the bench's IdP for this broker, unique (its own `jti`). */
  subjectToken(claims: Record<string, unknown> = {}): string {
    const now = Math.floor(Date.now() / 1000);
    return this.#idp.sign({ iss: this.deps.idp.issuer, sub: 'alice', aud: this.issuer, iat: now, exp: now + 3600, jti: randomUUID(), ...claims });
  }

  /** Form parameters plus a fresh assertion; a parameter given as '' is left out. */
  form(parameters: Record<string, string>): string {
    const present = Object.entries(parameters).filter(([, value]) => value !== '');
    return new URLSearchParams({ ...Object.fromEntries(present), client_assertion_type: ASSERTION_TYPE, client_assertion: this.#client.clientAssertion(CLIENT_ID, this.tokenEndpoint) }).toString();
  }

  exchange(subjectToken: string, audience: string, extra: Record<string, string> = {}): string {
    return this.form({ grant_type: TOKEN_EXCHANGE, subject_token: subjectToken, subject_token_type: ID_TOKEN, audience, scope: 'read', ...extra });
  }

  /** The client's own broker token (the delegated scenario's actor), exchanged once outside timing. */
  async actorToken(): Promise<string> {
    const response = await fetch(this.tokenEndpoint, { method: 'POST', headers: FORM, body: this.form({ grant_type: TOKEN_EXCHANGE, subject_token: this.subjectToken({ sub: CLIENT_ID }), subject_token_type: ID_TOKEN, audience: CLIENT_ID }) });
    const body = (await response.json()) as { access_token?: string };
    if (!body.access_token) throw new Error(`could not get the actor token: ${JSON.stringify(body)}`);
    return body.access_token;
  }
}

function times<T>(count: number, make: (index: number) => T): T[] {
  return Array.from({ length: count }, (_, index) => make(index));
}

/** The four exchange shapes the issue names, all against one broker. */
export async function tesseraScenarios(bodies: TesseraBodies): Promise<BenchScenario[]> {
  const url = bodies.tokenEndpoint;
  const warmSubject = bodies.subjectToken();
  const delegatedSubject = bodies.subjectToken({ email: 'alice@example.test' });
  const actor = await bodies.actorToken();
  return [
    { name: 'tessera: cold exchange', url, headers: FORM, comparable: 'token_exchange', bodies: async (count) => times(count, () => bodies.exchange(bodies.subjectToken(), API)) },
    { name: 'tessera: warm exchange', url, headers: FORM, comparable: 'token_exchange', bodies: async (count) => times(count, (index) => bodies.exchange(warmSubject, WARM_AUDIENCES[index % WARM_AUDIENCES.length]!)) },
    {
      name: 'tessera: delegated exchange',
      url,
      headers: FORM,
      bodies: async (count) => times(count, () => bodies.exchange(delegatedSubject, API, { actor_token: actor, actor_token_type: 'urn:ietf:params:oauth:token-type:access_token' })),
    },
    { name: 'tessera: client_credentials', url, headers: FORM, comparable: 'client_credentials', bodies: async (count) => times(count, () => bodies.form({ grant_type: 'client_credentials', audience: API, scope: 'read' })) },
  ];
}

/** The Tessera system: the CLI with `benchConfig`, pinned to `options.cpu`. */
export async function startTessera(options: StartOptions, deps: TesseraBenchDeps, version: string): Promise<BenchSystem> {
  const { child, issuer } = await serveCli((url) => benchConfig(url, deps, options.workDir), options);
  return { name: 'tessera', version, pid: child.pid!, scenarios: await tesseraScenarios(new TesseraBodies(issuer, deps)), stop: () => stopChild(child) };
}

/**
 * Process start to the first successful exchange: `tessera serve` is spawned and a valid exchange is
 * tried every 5 ms until one answers 200 (config load, plugin start, key generation, JWKS fetch and
 * the first request's lazy work included).
 */
export async function coldStart(options: StartOptions, deps: TesseraBenchDeps): Promise<number> {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const path = join(options.workDir, 'cold-start.json');
  await writeFile(path, JSON.stringify(benchConfig(issuer, deps, options.workDir)));
  const bodies = new TesseraBodies(issuer, deps);
  const attempts = times(2000, () => bodies.exchange(bodies.subjectToken(), API));
  const started = performance.now();
  const child = spawnPinned(options.cpu, process.execPath, [CLI, 'serve', '--config', path], { env: { ...process.env, PORT: String(port) }, stdio: 'ignore' });
  try {
    for (const body of attempts) {
      if (child.exitCode !== null) throw new Error(`tessera serve exited ${child.exitCode} before its first exchange`);
      const status = await fetch(bodies.tokenEndpoint, { method: 'POST', headers: FORM, body }).then(
        (response) => response.arrayBuffer().then(() => response.status),
        () => 0,
      );
      if (status === 200) return performance.now() - started;
      await new Promise((done) => setTimeout(done, 5));
    }
    throw new Error('no successful exchange within 2000 attempts');
  } finally {
    await stopChild(child);
  }
}
