import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants, openSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { JSONWebKeySet, JWK } from 'jose';
import { DelegatedIdentityClient, parseSelector } from '@tessera/spiffe';

/** Where `scripts/install-spire.sh` puts `spire-server` and `spire-agent`. */
export const SPIRE_BIN = fileURLToPath(new URL('../../.tools/spire/bin', import.meta.url));
const SERVER_BIN = join(SPIRE_BIN, 'spire-server');
const AGENT_BIN = join(SPIRE_BIN, 'spire-agent');

/** Why SPIRE tests cannot run on this machine, or undefined when they can. */
export function spireUnavailableReason(): string | undefined {
  if (typeof process.getuid !== 'function') return 'SPIRE interop needs a Unix host (unix workload attestor)';
  for (const bin of [SERVER_BIN, AGENT_BIN]) {
    try {
      accessSync(bin, constants.X_OK);
    } catch {
      return `${bin} missing or not executable: run scripts/install-spire.sh`;
    }
  }
  return undefined;
}

export function spireAvailable(): boolean {
  return spireUnavailableReason() === undefined;
}

/** CI sets TESSERA_REQUIRE_SPIRE=1 so that a missing SPIRE fails the run instead of skipping silently. */
export function spireRequired(): boolean {
  return process.env.TESSERA_REQUIRE_SPIRE === '1';
}

/** A full SPIFFE bundle (`spire-server bundle show -format spiffe`): JWT and X.509 keys, each with `use`. */
export interface SpiffeBundle {
  keys: JWK[];
  spiffe_sequence?: number;
  spiffe_refresh_hint?: number;
}

export interface SpireOptions {
  /** Default `example.org`. */
  trustDomain?: string;
  /** The broker's own SPIFFE ID, registered for `brokerSelectors`. Default `spiffe://<trustDomain>/tessera`. */
  brokerId?: string;
  /** Default `unix:uid:<this process's uid>`: the test process is the broker. */
  brokerSelectors?: readonly string[];
  /** The agent's `authorized_delegates`. Default `[brokerId]`. */
  authorizedDelegates?: readonly string[];
  /** Until server and agent are up and the broker entry is served. Default 60 s; an idle machine takes 2–3 s. */
  startupTimeoutMs?: number;
}

/** Credentials to run a Workload API client under, so the agent attests it as `unix:uid:<uid>` (and `unix:gid:<gid>`). Needs root. */
export interface PoseAs {
  uid: number;
  gid?: number;
}

export interface Spire {
  readonly trustDomain: string;
  readonly brokerId: string;
  /** Parent ID of every entry: the agent's join-token alias. */
  readonly agentId: string;
  /** Temp dir holding configs, data, sockets, `server.log` and `agent.log`; removed by `stop()`. */
  readonly dir: string;
  readonly serverSocket: string;
  /** Workload API (`unix://` + this is the `SPIFFE_ENDPOINT_SOCKET` form). */
  readonly workloadSocket: string;
  /** Agent admin API, where the Delegated Identity API lives. */
  readonly adminSocket: string;
  /** The server's full SPIFFE bundle. */
  jwtBundle(): Promise<SpiffeBundle>;
  /** The JWT-SVID keys as a plain JWKS, the way SPIRE's APIs serve them (no `use`: jose would skip `jwt-svid`). */
  bundleJwks(): Promise<JSONWebKeySet>;
  /**
   * Registers an entry under the agent; selectors in CLI form (`unix:uid:1000`). Resolves to the entry ID.
   * `x509SvidTtlSeconds` shortens its X.509-SVIDs' lifetime: the agent rotates them at about half of it.
   */
  createEntry(spiffeId: string, selectors: readonly string[], options?: { x509SvidTtlSeconds?: number }): Promise<string>;
  /**
   * Waits until the agent serves `spiffeId` (default the broker's) over the Workload API to this process,
   * or to a client running `as` another uid for entries like `unix:uid:1002`. An entry that no local
   * process can match (`k8s:…`) can only be awaited by polling the Delegated Identity API with its selectors.
   */
  waitForEntry(spiffeId?: string, options?: { as?: PoseAs; timeoutMs?: number }): Promise<void>;
  /** A JWT-SVID from the Workload API via `spire-agent api fetch jwt`: this process's, or a client's run `as` another uid. */
  fetchJwtSvid(audience: string, options?: { spiffeId?: string; as?: PoseAs }): Promise<string>;
  /** SIGTERM both, SIGKILL after a grace, then remove `dir`. Idempotent. */
  stop(): Promise<void>;
  /** Stops the agent only (the server keeps running): its sockets go away, as in an agent outage. */
  stopAgent(): Promise<void>;
  /** Starts the agent again with a fresh join token (its memory key manager forgot the old attestation). */
  startAgent(): Promise<void>;
}

const POLL_MS = 200;
const GRACE_MS = 5_000;
const PORT_ATTEMPTS = 3;

/**
 * Starts a private SPIRE server and agent (join_token attestation, unix workload attestor, admin API on)
 * and registers the broker's own entry. Each call gets its own temp dir, sockets and port, so test
 * files running in parallel do not collide.
 */
export async function startSpire(options: SpireOptions = {}): Promise<Spire> {
  const unavailable = spireUnavailableReason();
  if (unavailable) throw new Error(unavailable);
  const trustDomain = options.trustDomain ?? 'example.org';
  const brokerId = options.brokerId ?? `spiffe://${trustDomain}/tessera`;
  const brokerSelectors = options.brokerSelectors ?? [`unix:uid:${process.getuid!()}`];
  const authorizedDelegates = options.authorizedDelegates ?? [brokerId];
  const deadline = Date.now() + (options.startupTimeoutMs ?? 60_000);

  // Short on purpose: Unix socket paths are capped near 107 bytes, and os.tmpdir() can be long.
  const dir = await mkdtemp('/tmp/spire-');
  // Traversable, so workloads posing as other uids reach the (world-writable) Workload API socket.
  await chmod(dir, 0o755);
  const paths = {
    serverConf: join(dir, 'server.conf'),
    agentConf: join(dir, 'agent.conf'),
    bundle: join(dir, 'bundle.pem'),
    serverLog: join(dir, 'server.log'),
    agentLog: join(dir, 'agent.log'),
    serverSocket: join(dir, 'server', 'api.sock'),
    workloadSocket: join(dir, 'agent', 'public', 'api.sock'),
    // SPIRE refuses an admin socket in (or under) the workload socket's dir.
    adminSocket: join(dir, 'agent', 'private', 'admin.sock'),
  };
  await mkdir(join(dir, 'server', 'data'), { recursive: true });
  await mkdir(join(dir, 'agent', 'data'), { recursive: true });
  await mkdir(join(dir, 'agent', 'public'), { recursive: true });
  // An authorized delegate can impersonate every workload: keep the admin socket owner-only.
  await mkdir(join(dir, 'agent', 'private'), { mode: 0o700 });

  const reaper = startReaper(dir);
  const children: ChildProcess[] = [];
  const agentId = `spiffe://${trustDomain}/tessera-test-agent`;
  const serverCli = (...args: string[]) => cli(SERVER_BIN, [...args, '-socketPath', paths.serverSocket]);

  const stopAll = async (): Promise<void> => {
    // The reaper goes first: once our children are gone their pids may be reused.
    reaper.kill('SIGKILL');
    await Promise.all(children.reverse().map((child) => terminate(child)));
    await rm(dir, { recursive: true, force: true });
  };

  try {
    let port: number;
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      await writeFile(paths.serverConf, serverConfig({ ...paths, dir, trustDomain, port }));
      const server = daemon(SERVER_BIN, ['run', '-config', paths.serverConf], paths.serverLog, reaper);
      children.push(server);
      try {
        await until('spire-server healthy', deadline, [server], async () => {
          await serverCli('healthcheck');
        });
        break;
      } catch (error) {
        // freePort() closes its probe before SPIRE binds: another process can win the port meanwhile.
        const raced = server.exitCode !== null && (await tail(paths.serverLog)).includes('address already in use');
        if (!raced || attempt === PORT_ATTEMPTS) throw error;
      }
    }
    await writeFile(paths.bundle, await serverCli('bundle', 'show', '-format', 'pem'));
    const token = /Token: (\S+)/.exec(await serverCli('token', 'generate', '-spiffeID', agentId, '-ttl', '600'))?.[1];
    if (!token) throw new Error('spire-server token generate printed no token');

    await writeFile(paths.agentConf, agentConfig({ ...paths, dir, trustDomain, port, authorizedDelegates }));
    await launchAgent(token, deadline);
  } catch (error) {
    const logs = await Promise.all([tail(paths.serverLog), tail(paths.agentLog)]);
    await stopAll();
    throw new Error(
      `SPIRE failed to start: ${(error as Error).message}\n--- server.log (tail) ---\n${logs[0]}\n--- agent.log (tail) ---\n${logs[1]}`,
    );
  }

  async function launchAgent(joinToken: string, deadlineMs: number): Promise<void> {
    const agent = daemon(AGENT_BIN, ['run', '-config', paths.agentConf, '-joinToken', joinToken], paths.agentLog, reaper);
    children.push(agent);
    await until('spire-agent healthy', deadlineMs, children, async () => {
      await cli(AGENT_BIN, ['healthcheck', '-socketPath', paths.workloadSocket]);
    });
  }

  let stopping: Promise<void> | undefined;
  const spire: Spire = {
    async stopAgent() {
      const agent = children.find((child) => child.spawnfile === AGENT_BIN && child.exitCode === null && child.signalCode === null);
      if (agent) {
        await terminate(agent);
        children.splice(children.indexOf(agent), 1);
      }
    },

    async startAgent() {
      const token = /Token: (\S+)/.exec(await serverCli('token', 'generate', '-spiffeID', agentId, '-ttl', '600'))?.[1];
      if (!token) throw new Error('spire-server token generate printed no token');
      await launchAgent(token, Date.now() + (options.startupTimeoutMs ?? 60_000));
    },

    trustDomain,
    brokerId,
    agentId,
    dir,
    serverSocket: paths.serverSocket,
    workloadSocket: paths.workloadSocket,
    adminSocket: paths.adminSocket,

    async jwtBundle() {
      return JSON.parse(await serverCli('bundle', 'show', '-format', 'spiffe')) as SpiffeBundle;
    },

    async bundleJwks() {
      const { keys } = await spire.jwtBundle();
      return { keys: keys.filter((key) => key.use === 'jwt-svid').map(({ use: _use, ...key }) => key) };
    },

    async createEntry(spiffeId, selectors, { x509SvidTtlSeconds } = {}) {
      const args = ['entry', 'create', '-parentID', agentId, '-spiffeID', spiffeId, '-output', 'json'];
      if (x509SvidTtlSeconds !== undefined) args.push('-x509SVIDTTL', String(x509SvidTtlSeconds));
      for (const selector of selectors) args.push('-selector', selector);
      const out = JSON.parse(await serverCli(...args)) as { results?: { entry?: { id?: string } }[] };
      const id = out.results?.[0]?.entry?.id;
      if (!id) throw new Error(`spire-server entry create gave no entry ID for ${spiffeId}`);
      return id;
    },

    async waitForEntry(spiffeId = brokerId, { as, timeoutMs = 30_000 } = {}) {
      await until(`agent serving ${spiffeId}`, Date.now() + timeoutMs, children, async () => {
        await spire.fetchJwtSvid('tessera-spire-harness', { spiffeId, as });
      });
    },

    async fetchJwtSvid(audience, { spiffeId, as } = {}) {
      const args = ['api', 'fetch', 'jwt', '-audience', audience, '-socketPath', paths.workloadSocket, '-output', 'json'];
      if (spiffeId) args.push('-spiffeID', spiffeId);
      // Printed as [JWTSVIDResponse, JWTBundlesResponse].
      const out = await cli(AGENT_BIN, args, { uid: as?.uid, gid: as?.gid });
      const [response] = JSON.parse(out) as [{ svids?: { spiffe_id: string; svid: string }[] }];
      const svid = response.svids?.find((s) => spiffeId === undefined || s.spiffe_id === spiffeId);
      if (!svid) throw new Error(`the agent served no JWT-SVID${spiffeId ? ` for ${spiffeId}` : ''}`);
      return svid.svid;
    },

    stop() {
      stopping ??= stopAll();
      return stopping;
    },
  };

  try {
    await spire.createEntry(brokerId, brokerSelectors);
    if (brokerSelectors.every((selector) => matchesThisProcess(selector))) {
      await spire.waitForEntry(brokerId, { timeoutMs: Math.max(deadline - Date.now(), 1_000) });
    }
  } catch (error) {
    const logs = await Promise.all([tail(paths.serverLog), tail(paths.agentLog)]);
    await spire.stop();
    throw new Error(
      `SPIRE started but the broker entry was not served: ${(error as Error).message}\n` +
        `--- server.log (tail) ---\n${logs[0]}\n--- agent.log (tail) ---\n${logs[1]}`,
    );
  }
  return spire;
}

function matchesThisProcess(selector: string): boolean {
  return selector === `unix:uid:${process.getuid?.()}` || selector === `unix:gid:${process.getgid?.()}`;
}

interface ConfigInput {
  dir: string;
  trustDomain: string;
  port: number;
  serverSocket: string;
  workloadSocket: string;
  adminSocket: string;
  bundle: string;
}

// JSON string literals are valid HCL strings.
const q = (value: string | number): string => JSON.stringify(String(value));

function serverConfig(c: ConfigInput): string {
  return `server {
  bind_address = "127.0.0.1"
  bind_port    = ${q(c.port)}
  socket_path  = ${q(c.serverSocket)}
  trust_domain = ${q(c.trustDomain)}
  data_dir     = ${q(join(c.dir, 'server', 'data'))}
  log_level    = "WARN"
  experimental {
    # Default 5 s: how soon a new entry can reach the agent at all.
    cache_reload_interval = "1s"
  }
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type     = "sqlite3"
      connection_string = ${q(join(c.dir, 'server', 'data', 'datastore.sqlite3'))}
    }
  }
  KeyManager "memory" { plugin_data {} }
  NodeAttestor "join_token" { plugin_data {} }
}
`;
}

function agentConfig(c: ConfigInput & { authorizedDelegates: readonly string[] }): string {
  return `agent {
  data_dir             = ${q(join(c.dir, 'agent', 'data'))}
  log_level            = "WARN"
  server_address       = "127.0.0.1"
  server_port          = ${q(c.port)}
  socket_path          = ${q(c.workloadSocket)}
  admin_socket_path    = ${q(c.adminSocket)}
  trust_domain         = ${q(c.trustDomain)}
  trust_bundle_path    = ${q(c.bundle)}
  authorized_delegates = [${c.authorizedDelegates.map(q).join(', ')}]
  experimental {
    # Default 5 s: new entries reach the agent (and tests) sooner.
    sync_interval = "1s"
  }
}
plugins {
  NodeAttestor "join_token" { plugin_data {} }
  KeyManager "memory" { plugin_data {} }
  WorkloadAttestor "unix" { plugin_data {} }
}
`;
}

/**
 * A `sh` that holds the read end of a pipe from this process and is told each child's pid. When this
 * process dies, however abruptly, the pipe closes and it SIGKILLs the children and removes the dir.
 */
function startReaper(dir: string): ChildProcess {
  const script = 'pids=; while read -r pid; do pids="$pids $pid"; done; [ -n "$pids" ] && kill -KILL $pids 2>/dev/null; rm -rf "$1"';
  const reaper = spawn('sh', ['-c', script, 'spire-reaper', dir], { stdio: ['pipe', 'ignore', 'ignore'] });
  reaper.on('error', () => undefined);
  reaper.stdin!.on('error', () => undefined); // EPIPE once stop() has killed it
  // Neither the reaper nor its pipe may keep the test process alive: its death is the signal.
  reaper.unref();
  (reaper.stdin as Socket).unref();
  return reaper;
}

function daemon(bin: string, args: string[], log: string, reaper: ChildProcess): ChildProcess {
  const fd = openSync(log, 'a');
  try {
    const child = spawn(bin, args, { stdio: ['ignore', fd, fd] });
    child.on('error', () => undefined); // surfaces as an exit seen by until()
    if (child.pid !== undefined) reaper.stdin!.write(`${child.pid}\n`);
    child.unref();
    return child;
  } finally {
    closeSync(fd);
  }
}

async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), GRACE_MS);
  await exited;
  clearTimeout(timer);
}

/** Polls `probe` until it resolves; fails fast if a daemon exits, else at the deadline with the last error. */
async function until(what: string, deadline: number, daemons: ChildProcess[], probe: () => Promise<void>): Promise<void> {
  let last: unknown;
  for (;;) {
    const dead = daemons.find((child) => child.exitCode !== null || child.signalCode !== null);
    if (dead) throw new Error(`waiting for ${what}: ${basename(String(dead.spawnfile))} exited (${dead.exitCode ?? dead.signalCode})`);
    try {
      await probe();
      return;
    } catch (error) {
      last = error;
    }
    if (Date.now() >= deadline) throw new Error(`timed out waiting for ${what}: ${(last as Error)?.message ?? last}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function cli(bin: string, args: string[], credentials: { uid?: number; gid?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { ...credentials, timeout: 15_000, killSignal: 'SIGKILL' }, (error, stdout, stderr) => {
      if (!error) return resolve(stdout);
      const detail = (stderr || stdout || error.message).trim();
      reject(new Error(`${basename(bin)} ${args.slice(0, 2).join(' ')}: ${detail}`));
    });
  });
}

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', resolve);
  });
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

async function tail(path: string, lines = 40): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Entries with selectors no local process has are served only through the Delegated Identity API: poll it. */
export async function waitForDelegatedEntry(adminSocket: string, selectors: readonly string[], timeoutMs = 60_000): Promise<void> {
  const client = new DelegatedIdentityClient(`unix://${adminSocket}`);
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      try {
        await client.fetchJwtSvids({ audience: ['probe'], selectors: selectors.map(parseSelector) });
        return;
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
  } finally {
    client.close();
  }
}
