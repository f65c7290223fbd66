/**
 * Keycloak 26 as a bench peer: the official Quarkus distribution in production mode (`start --optimized`),
 * one realm `bench` signing ES256, configured through the admin REST API, and two request shapes that
 * match Tessera's rows: client_credentials with a private_key_jwt (ES256) client assertion, and standard
 * token exchange V2 (RFC 8693) with the same client authentication.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readlinkSync, readdirSync, rmSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';
import { freePort } from '../../free-port.js';
import { Es256Signer } from '../jws.js';
import { spawnPinned, type BenchScenario, type BenchSystem, type StartSystem, type Unavailable } from '../system.js';

const KEYCLOAK_VERSION = '26.7.3';
const JAVA_HOME = '/usr/lib/jvm/temurin-25-jdk-amd64';
/** Fixed and stated in `version`: Keycloak's own default depends on container detection. */
const HEAP = '-Xms256m -Xmx512m';
const REPO = fileURLToPath(new URL('../../../../', import.meta.url));
const INSTALL_SCRIPT = join(REPO, 'scripts/install-keycloak.sh');
const KC_HOME = join(REPO, '.tools/keycloak', `keycloak-${KEYCLOAK_VERSION}`);
/** Written by the install script after `kc.sh build` succeeded: without it `start --optimized` can't run. */
const BUILT_MARKER = join(KC_HOME, '.tessera-built');
const READY_TIMEOUT_MS = 180_000;
const STOP_GRACE_MS = 10_000;
const REALM = 'bench';
const CLIENT_ID = 'bench-client';
const SUBJECT_CLIENT_ID = 'subject-client';
/**
 * Client assertion lifetime. Keycloak rejects an assertion whose iat is older than the client's
 * `token.endpoint.auth.signing.max.exp` (default 60 s), so that attribute is set to the same value: bodies
 * stay usable for this long after `bodies()` made them.
 */
// Es256Signer.clientAssertion's lifetime: Keycloak refuses assertions older than this (default 60 s).
const ASSERTION_LIFETIME_S = 300;
const FORM = { 'content-type': 'application/x-www-form-urlencoded' } as const;
const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

export const startKeycloak: StartSystem = async ({ cpu, workDir, log }) => {
  const java = join(JAVA_HOME, 'bin/java');
  if (!existsSync(java)) return { unavailable: `no Java at ${java} (Keycloak ${KEYCLOAK_VERSION} needs Java 21+)` };
  const javaVersion = await javaRuntime(java);
  if (typeof javaVersion !== 'string') return javaVersion;

  if (!existsSync(BUILT_MARKER)) {
    log(`keycloak: distribution missing, running ${INSTALL_SCRIPT} (download + kc.sh build, about a minute)`);
    const installed = await runInstall();
    if (installed !== true) return installed;
  }

  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const adminPassword = randomBytes(18).toString('base64url');
  // A fresh H2 file per run: the bootstrap admin is only created with a new master realm, and no jti cache,
  // session or realm state of an earlier run is carried over. Same URL shape as Keycloak's dev-file default.
  const dbDir = join(workDir, 'keycloak-h2');
  rmSync(dbDir, { recursive: true, force: true });
  mkdirSync(dbDir, { recursive: true });

  const args = [
    'start',
    '--optimized',
    '--http-enabled=true',
    '--http-host=127.0.0.1',
    `--http-port=${port}`,
    '--hostname-strict=false',
    // Build-time options (db, health, metrics) are fixed by install-keycloak.sh's `kc.sh build`.
    `--db-url=jdbc:h2:file:${join(dbDir, 'keycloakdb')};NON_KEYWORDS=VALUE`,
    // Production mode defaults to the clustered `ispn` cache (JGroups discovery); one node needs none of it.
    '--cache=local',
    '--log-level=warn',
  ];
  const started = Date.now();
  log(`keycloak: kc.sh ${args.join(' ')} (cpu ${cpu ?? 'unpinned'}, heap ${HEAP})`);
  // detached: its own process group, so stop() can signal the whole group and leave nothing behind.
  const child = spawnPinned(cpu, join(KC_HOME, 'bin/kc.sh'), args, {
    cwd: workDir,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      JAVA_HOME,
      JAVA_OPTS_KC_HEAP: HEAP,
      KC_BOOTSTRAP_ADMIN_USERNAME: 'admin',
      KC_BOOTSTRAP_ADMIN_PASSWORD: adminPassword,
    },
  });
  // Until ready, the server's own lines (warn and above) go to the operator: they explain a slow or failed start.
  let starting = true;
  const output = tail(child, (line) => starting && log(`keycloak: | ${line}`));
  let exited: string | undefined;
  child.once('exit', (code, signal) => (exited = `exited (code ${code}, signal ${signal})`));
  child.once('error', (error) => (exited = `failed to spawn: ${error.message}`));
  // A crashed bench must not leave a JVM running in its own process group.
  const killOnExit = (): void => killGroup(child, 'SIGKILL');
  process.once('exit', killOnExit);
  const stop = async (): Promise<void> => {
    process.removeListener('exit', killOnExit);
    await stopGroup(child);
  };

  try {
    const ready = await waitReady(`${base}/realms/master/.well-known/openid-configuration`, () => exited);
    if (ready !== true) {
      starting = false;
      await stop();
      return { unavailable: `Keycloak ${ready}; last output: ${output().join(' | ') || '(none)'}` };
    }
    starting = false;
    const startupSeconds = (Date.now() - started) / 1000;
    log(`keycloak: ready in ${startupSeconds.toFixed(1)} s`);

    // kc.sh ends in `exec java`, and taskset execs too, so the spawned pid is the JVM; checked, not assumed.
    const pid = jvmPid(child.pid!);
    if (pid === undefined) {
      await stop();
      return { unavailable: `no java process found under pid ${child.pid}` };
    }

    const setup = await configure(base, adminPassword);
    log(`keycloak: realm ${REALM} configured (ES256 key ${setup.signingKid})`);

    const scenarios: BenchScenario[] = [
      {
        name: 'keycloak: client_credentials',
        comparable: 'client_credentials',
        warmupSeconds: 20,
        url: setup.tokenEndpoint,
        headers: FORM,
        bodies: async (count) =>
          setup.assertions(count).map((assertion) =>
            new URLSearchParams({ grant_type: 'client_credentials', client_assertion_type: JWT_BEARER, client_assertion: assertion }).toString(),
          ),
      },
      {
        name: 'keycloak: token exchange V2',
        comparable: 'token_exchange',
        warmupSeconds: 20,
        url: setup.tokenEndpoint,
        headers: FORM,
        bodies: async (count) => {
          // The fixed part encoded once; only the assertion differs between bodies.
          const prefix = new URLSearchParams({
            grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
            subject_token: setup.subjectToken,
            subject_token_type: ACCESS_TOKEN_TYPE,
            requested_token_type: ACCESS_TOKEN_TYPE,
            client_assertion_type: JWT_BEARER,
          }).toString();
          return setup.assertions(count).map((assertion) => `${prefix}&client_assertion=${assertion}`);
        },
      },
    ];

    return {
      name: 'keycloak',
      version:
        `Keycloak ${KEYCLOAK_VERSION}, ${javaVersion}, heap ${HEAP}, start --optimized, dev-file (H2) DB, local cache, ` +
        `startup ${startupSeconds.toFixed(1)} s`,
      pid,
      scenarios,
      stop,
    } satisfies BenchSystem;
  } catch (error) {
    await stop();
    return { unavailable: `Keycloak setup failed: ${error instanceof Error ? error.message : String(error)}` };
  }
};

interface Setup {
  readonly tokenEndpoint: string;
  readonly subjectToken: string;
  readonly signingKid: string;
  /** `count` fresh client assertions for bench-client. */
  assertions(count: number): string[];
}

/** Realm, key, clients and the subject token, all through the admin REST API. */
async function configure(base: string, adminPassword: string): Promise<Setup> {
  const admin = adminApi(base, adminPassword);

  // accessTokenLifespan: the one subject token made here must outlive the whole run.
  await admin('POST', '/admin/realms', { realm: REALM, enabled: true, accessTokenLifespan: 3600, defaultSignatureAlgorithm: 'ES256' });
  const realm = (await admin('GET', `/admin/realms/${REALM}`)) as { id: string };
  // A new realm gets RSA/HMAC/AES generated keys only; ES256 needs a key provider of its own.
  await admin('POST', `/admin/realms/${REALM}/components`, {
    name: 'bench-es256',
    providerId: 'ecdsa-generated',
    providerType: 'org.keycloak.keys.KeyProvider',
    parentId: realm.id,
    config: { priority: ['200'], enabled: ['true'], active: ['true'], ecdsaEllipticCurveKey: ['P-256'] },
  });
  const keys = (await admin('GET', `/admin/realms/${REALM}/keys`)) as { active?: Record<string, string> };
  const signingKid = keys.active?.ES256;
  if (!signingKid) throw new Error(`realm ${REALM} has no active ES256 key: ${JSON.stringify(keys.active)}`);

  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), use: 'sig', alg: 'ES256' };
  const kid = await calculateJwkThumbprint(jwk);
  await admin('POST', `/admin/realms/${REALM}/clients`, {
    clientId: CLIENT_ID,
    protocol: 'openid-connect',
    publicClient: false,
    clientAuthenticatorType: 'client-jwt',
    serviceAccountsEnabled: true,
    standardFlowEnabled: false,
    implicitFlowEnabled: false,
    directAccessGrantsEnabled: false,
    attributes: {
      'use.jwks.url': 'false',
      'use.jwks.string': 'true',
      'jwks.string': JSON.stringify({ keys: [{ ...jwk, kid }] }),
      'token.endpoint.auth.signing.alg': 'ES256',
      'token.endpoint.auth.signing.max.exp': String(ASSERTION_LIFETIME_S),
      'standard.token.exchange.enabled': 'true',
    },
  });

  const subjectSecret = randomBytes(24).toString('base64url');
  await admin('POST', `/admin/realms/${REALM}/clients`, {
    clientId: SUBJECT_CLIENT_ID,
    protocol: 'openid-connect',
    publicClient: false,
    clientAuthenticatorType: 'client-secret',
    secret: subjectSecret,
    serviceAccountsEnabled: true,
    standardFlowEnabled: false,
    implicitFlowEnabled: false,
    directAccessGrantsEnabled: false,
    // Token exchange V2 only lets a client exchange tokens that name it in `aud`.
    protocolMappers: [
      {
        name: 'audience-bench-client',
        protocol: 'openid-connect',
        protocolMapper: 'oidc-audience-mapper',
        config: { 'included.client.audience': CLIENT_ID, 'access.token.claim': 'true', 'id.token.claim': 'false' },
      },
    ],
  });

  const discovery = (await json(await fetch(`${base}/realms/${REALM}/.well-known/openid-configuration`))) as {
    issuer: string;
    token_endpoint: string;
  };
  const subject = (await json(
    await fetch(discovery.token_endpoint, {
      method: 'POST',
      headers: FORM,
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: SUBJECT_CLIENT_ID, client_secret: subjectSecret }),
    }),
  )) as { access_token: string };

  const signer = assertionSigner(new Es256Signer({ ...(await exportJWK(privateKey)), kid }, 'JWT'), discovery.issuer);
  return { tokenEndpoint: discovery.token_endpoint, subjectToken: subject.access_token, signingKid, assertions: signer };
}

/**
 * Fresh client assertions for `count` bodies. aud is the issuer, one of the audiences Keycloak's
 * JWTClientValidator accepts; a single value, since several audiences are refused by default.
 */
function assertionSigner(signer: Es256Signer, issuer: string): (count: number) => string[] {
  return (count) => Array.from({ length: count }, () => signer.clientAssertion(CLIENT_ID, issuer));
}

type AdminCall = (method: string, path: string, body?: unknown) => Promise<unknown>;

/** Admin REST calls with a master-realm admin-cli token, fetched again when it has expired (60 s lifespan). */
function adminApi(base: string, password: string): AdminCall {
  let token: string | undefined;
  const login = async (): Promise<string> => {
    const response = await fetch(`${base}/realms/master/protocol/openid-connect/token`, {
      method: 'POST',
      headers: FORM,
      body: new URLSearchParams({ grant_type: 'password', client_id: 'admin-cli', username: 'admin', password }),
    });
    return ((await json(response)) as { access_token: string }).access_token;
  };
  return async (method, path, body) => {
    for (let attempt = 0; ; attempt++) {
      token ??= await login();
      const response = await fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      if (response.status === 401 && attempt === 0) {
        token = undefined;
        continue;
      }
      if (!response.ok) throw new Error(`${method} ${path}: HTTP ${response.status} ${(await response.text()).slice(0, 300)}`);
      const text = await response.text();
      return text ? (JSON.parse(text) as unknown) : undefined;
    }
  };
}

async function json(response: Response): Promise<unknown> {
  const text = await response.text();
  if (!response.ok) throw new Error(`${response.url}: HTTP ${response.status} ${text.slice(0, 300)}`);
  return JSON.parse(text) as unknown;
}

/** e.g. `Temurin-25.0.3+9`, from the `Runtime Environment` line of `java -version`. */
function javaRuntime(java: string): Promise<string | Unavailable> {
  return new Promise((resolve) => {
    execFile(java, ['-version'], { timeout: 30_000 }, (error, _stdout, stderr) => {
      if (error) return resolve({ unavailable: `${java} -version failed: ${error.message}` });
      const runtime = /Runtime Environment (\S+)/.exec(stderr)?.[1];
      resolve(runtime ?? stderr.split('\n')[0]?.trim() ?? 'unknown Java');
    });
  });
}

/** The install script, its progress passed through; its last stderr line is the reason when it fails. */
function runInstall(): Promise<true | Unavailable> {
  return new Promise((resolve) => {
    const install = spawn('bash', [INSTALL_SCRIPT], { stdio: ['ignore', 'inherit', 'pipe'] });
    let stderr = '';
    install.stderr!.on('data', (chunk: Buffer) => {
      process.stderr.write(chunk);
      stderr = (stderr + chunk.toString()).slice(-4000);
    });
    install.once('error', (error) => resolve({ unavailable: `could not run ${INSTALL_SCRIPT}: ${error.message}` }));
    install.once('exit', (code, signal) => {
      if (code === 0 && existsSync(BUILT_MARKER)) return resolve(true);
      const last = stderr.trim().split('\n').pop();
      resolve({ unavailable: `install-keycloak.sh failed (code ${code}, signal ${signal}): ${last || 'no stderr'}` });
    });
  });
}


/** The last lines of the server's output, for an unavailable reason. */
function tail(child: ChildProcess, each: (line: string) => void): () => string[] {
  const lines: string[] = [];
  const keep = (chunk: Buffer): void => {
    for (const line of chunk.toString().split('\n')) {
      if (!line.trim()) continue;
      lines.push(line.trim());
      each(line.trim());
    }
    lines.splice(0, Math.max(0, lines.length - 8));
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return () => [...lines];
}

async function waitReady(url: string, exited: () => string | undefined): Promise<true | string> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const gone = exited();
    if (gone) return gone;
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      await response.arrayBuffer();
      if (response.ok) return true;
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return `not ready after ${READY_TIMEOUT_MS / 1000} s (${url})`;
}

/** `pid` itself when it is the JVM, else the first java descendant. */
function jvmPid(pid: number): number | undefined {
  const isJava = (p: number): boolean => {
    try {
      return readlinkSync(`/proc/${p}/exe`).endsWith('/java');
    } catch {
      return false;
    }
  };
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    if (isJava(p)) return p;
    try {
      for (const task of readdirSync(`/proc/${p}/task`)) {
        const children = readFileSync(`/proc/${p}/task/${task}/children`, 'utf8').trim();
        if (children) queue.push(...children.split(/\s+/).map(Number));
      }
    } catch {
      // Gone meanwhile.
    }
  }
  return undefined;
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal);
  } catch {
    // Already gone.
  }
}

/** SIGTERM to the process group (Keycloak shuts down gracefully), SIGKILL after the grace period. */
async function stopGroup(child: ChildProcess): Promise<void> {
  if (child.pid === undefined) return;
  const groupAlive = (): boolean => {
    try {
      process.kill(-child.pid!, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (!groupAlive()) return;
  killGroup(child, 'SIGTERM');
  const deadline = Date.now() + STOP_GRACE_MS;
  while (groupAlive() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  if (groupAlive()) killGroup(child, 'SIGKILL');
  while (groupAlive()) await new Promise((resolve) => setTimeout(resolve, 50));
}
