/**
 * Peer: panva's oidc-provider, production-configured, in a child process of its own. Rows:
 * client_credentials (ES256 JWT access token for https://api.example.test) and an RFC 8693 token exchange
 * registered on it (an external IdP's ES256 ID token in, the same kind of JWT access token out), warm (one
 * subject token throughout) and cold (a fresh one per request). Storage is oidc-provider's bundled
 * in-memory adapter.
 */
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK } from 'jose';
import { Es256Signer } from '../jws.js';
import { spawnPinned, type BenchScenario, type StartSystem } from '../system.js';
import type { ServerConfig } from './oidc-provider-server.js';

const API = 'https://api.example.test';
const IDP_ISSUER = 'https://idp.bench.test';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';
const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const HEADERS = { 'content-type': 'application/x-www-form-urlencoded' } as const;
const START_TIMEOUT_MS = 30_000;

/** An ES256 key pair as JWKs with a thumbprint kid: the provider's, the client's and the IdP's. */
async function es256(): Promise<{ privateJwk: JWK; publicJwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  return { privateJwk: { ...(await exportJWK(privateKey)), kid, alg: 'ES256', use: 'sig' }, publicJwk: { ...publicJwk, kid, alg: 'ES256', use: 'sig' } };
}

async function providerVersion(): Promise<string | undefined> {
  try {
    const path = createRequire(import.meta.url).resolve('oidc-provider/package.json');
    return (JSON.parse(await readFile(path, 'utf8')) as { version: string }).version;
  } catch {
    return undefined;
  }
}

export const startOidcProvider: StartSystem = async (options) => {
  const version = await providerVersion();
  if (!version) return { unavailable: 'oidc-provider is not installed (test/ devDependency; run npm install)' };

  const [signing, client, idp] = await Promise.all([es256(), es256(), es256()]);
  const config: ServerConfig = { signingKey: signing.privateJwk, clientJwks: { keys: [client.publicJwk] }, idpJwks: { keys: [idp.publicJwk] }, idpIssuer: IDP_ISSUER, port: 0 };
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_ENV: 'production', OIDC_PROVIDER_BENCH_CONFIG: JSON.stringify(config) };
  delete env.DEBUG; // oidc-provider logs through `debug`; never per request here

  const child = spawnPinned(options.cpu, process.execPath, [fileURLToPath(new URL('./oidc-provider-server.js', import.meta.url))], {
    cwd: options.workDir,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderrTail: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => {
    stderrTail.push(line);
    if (stderrTail.length > 20) stderrTail.shift();
    options.log(`oidc-provider: ${line}`);
  });
  const exited = new Promise<void>((done) => child.once('exit', () => done()));

  // oidc-provider prints its notices with console.info, i.e. on stdout too: the ready line is the one that parses as {url}.
  const url = await new Promise<string | undefined>((resolve) => {
    const timer = setTimeout(() => resolve(undefined), START_TIMEOUT_MS);
    const lines = createInterface({ input: child.stdout! });
    let ready = false;
    lines.on('line', (line) => {
      if (!ready) {
        try {
          const parsed = JSON.parse(line) as { url?: unknown };
          if (typeof parsed.url === 'string') {
            ready = true;
            clearTimeout(timer);
            resolve(parsed.url);
            return;
          }
        } catch {
          // not the ready line
        }
      }
      options.log(`oidc-provider: ${line}`);
    });
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(undefined);
    });
    child.once('error', () => resolve(undefined));
  });
  if (!url || child.pid === undefined) {
    child.kill('SIGKILL');
    return { unavailable: `oidc-provider server did not start within ${START_TIMEOUT_MS / 1000}s: ${stderrTail.join(' | ') || 'no output'}` };
  }

  const issuer = url;
  const tokenEndpoint = `${issuer}/token`;
  const now = () => Math.floor(Date.now() / 1000);
  const clientSigner = new Es256Signer(client.privateJwk);
  const idpSigner = new Es256Signer(idp.privateJwk);
  // Single-use: oidc-provider records every assertion's jti (ReplayDetection), so each body gets its own.
  const assertion = () => clientSigner.clientAssertion('bench-client', tokenEndpoint);
  const subjectToken = () => idpSigner.sign({ iss: IDP_ISSUER, sub: 'alice', aud: issuer, iat: now(), exp: now() + 3600, jti: randomUUID() });
  // The fixed fields are form-encoded once; JWS compact serializations need no escaping (base64url and dots).
  const prefix = (fields: Record<string, string>) => `${new URLSearchParams({ ...fields, client_assertion_type: JWT_BEARER }).toString()}&client_assertion=`;
  const many = async (count: number, body: () => string) => Array.from({ length: count }, body);
  const clientCredentials = prefix({ grant_type: 'client_credentials', scope: 'read', resource: API });
  const exchange = prefix({ grant_type: TOKEN_EXCHANGE, subject_token_type: ID_TOKEN_TYPE, audience: API, scope: 'read', resource: API });

  const warmSubject = subjectToken();
  const scenarios: BenchScenario[] = [
    {
      name: 'oidc-provider: client_credentials',
      comparable: 'client_credentials',
      url: tokenEndpoint,
      headers: HEADERS,
      bodies: (count) => many(count, () => `${clientCredentials}${assertion()}`),
    },
    {
      name: 'oidc-provider: token exchange',
      comparable: 'token_exchange',
      url: tokenEndpoint,
      headers: HEADERS,
      bodies: (count) => many(count, () => `${exchange}${assertion()}&subject_token=${warmSubject}`),
    },
    {
      name: 'oidc-provider: token exchange, cold',
      comparable: 'token_exchange',
      url: tokenEndpoint,
      headers: HEADERS,
      bodies: (count) => many(count, () => `${exchange}${assertion()}&subject_token=${subjectToken()}`),
    },
  ];

  return {
    name: 'oidc-provider',
    version: `oidc-provider ${version}, node ${process.version}`,
    pid: child.pid,
    scenarios,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      child.kill('SIGTERM');
      await exited;
      clearTimeout(timer);
    },
  };
};
