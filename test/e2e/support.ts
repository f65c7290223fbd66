import { randomUUID } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, type JWTPayload } from 'jose';
import { createBroker, MemoryAuditSink, silentLogger, validateConfig, type Broker, type BrokerOptions } from '@tessera/core';
import { generateTestKey, LoopbackIssuer, type TestKey } from '@tessera/plugin-testkit';

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
export const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
export const JWT = 'urn:ietf:params:oauth:token-type:jwt';
export const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
export const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** A SPIFFE JWT-SVID as a token type, and as a client assertion type. */
export const JWT_SVID = 'urn:tessera:token-type:jwt-svid';
export const JWT_SPIFFE = 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe';
export const API = 'https://api.example.test';

export interface RunningBroker {
  readonly broker: Broker;
  readonly issuer: string;
  readonly tokenEndpoint: string;
  readonly audit: MemoryAuditSink;
  close(): Promise<void>;
}

/** Reserves a loopback port first, so the broker's issuer (and so every `aud`) names the real address. */
export async function startBroker(
  build: (issuer: string) => Record<string, unknown>,
  options: Omit<BrokerOptions, 'audit' | 'logger'> = {},
): Promise<RunningBroker> {
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const dataDir = await mkdtemp(join(tmpdir(), 'tessera-test-'));
  const config = validateConfig({ dataDir, keys: { generate: true }, network: { allowLoopbackHttp: true }, ...build(issuer), issuer });
  const audit = new MemoryAuditSink();
  const broker = await createBroker(config, { logger: silentLogger, audit, ...options });
  server.on('request', broker.app.callback());
  return {
    broker,
    issuer,
    tokenEndpoint: `${issuer}/token`,
    audit,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await broker.close();
    },
  };
}

/** A private_key_jwt client with real keys; `assertion()` makes a fresh RFC 7523 client assertion. */
export class TestClient {
  private constructor(
    readonly id: string,
    readonly key: TestKey,
  ) {}

  static async create(id = 'client-a', alg = 'ES256'): Promise<TestClient> {
    return new TestClient(id, await generateTestKey(alg));
  }

  /** Config entry for this client with its public key inline. */
  config(grantTypes: string[] = ['token_exchange', 'jwt_bearer', 'client_credentials']): Record<string, unknown> {
    return { id: this.id, auth: { method: 'private_key_jwt', jwks: { keys: [this.key.publicJwk] } }, grantTypes };
  }

  async assertion(audience: string, claims: JWTPayload = {}, options: { key?: TestKey; lifetime?: number } = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const key = options.key ?? this.key;
    return new SignJWT({ iss: this.id, sub: this.id, aud: audience, jti: randomUUID(), iat: now, exp: now + (options.lifetime ?? 60), ...claims })
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' })
      .sign(key.privateKey);
  }

  /** Form fields authenticating this client. */
  async auth(audience: string): Promise<Record<string, string>> {
    return { client_assertion_type: ASSERTION_TYPE, client_assertion: await this.assertion(audience) };
  }
}

/** Issuer config block of the oidc plugin for a loopback issuer. */
export function oidcPlugin(...issuers: { issuer: string; jwksUri?: string; algorithms?: string[]; maxTokenLifetimeSeconds?: number }[]) {
  return { use: '@tessera/plugin-oidc', config: { issuers } };
}

export const accessTokenPlugin = { use: '@tessera/plugin-access-token', config: {} };

/** The broker `tessera serve` tests run: a generated key under dataDir, `idpIssuer` trusted over loopback, access tokens for `client`. */
export function servedBroker(idpIssuer: string, client: TestClient): Record<string, unknown> {
  return {
    dataDir: 'data',
    keys: { generate: true },
    network: { allowLoopbackHttp: true },
    clients: [client.config(['token_exchange'])],
    plugins: [oidcPlugin({ issuer: idpIssuer }), accessTokenPlugin],
    policy: { rules: [allowRule(idpIssuer)] },
  };
}

export function allowRule(issuer: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: 'idp-to-api',
    match: { issuers: [issuer] },
    grant: { audiences: [API, 'https://other.example.test/**', 'https://other.example.test/**?x=1'], defaultAudiences: [API], scopes: ['read', 'write'], maxLifetimeSeconds: 600, ...extra },
  };
}

export interface TokenCall {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Record<string, unknown>;
  readonly text: string;
}

/** POSTs a form to the token endpoint. Array values repeat the parameter. */
export async function postToken(
  endpoint: string,
  fields: Record<string, string | string[]>,
  init: { headers?: Record<string, string>; method?: string } = {},
): Promise<TokenCall> {
  const form = new URLSearchParams();
  for (const [name, value] of Object.entries(fields)) for (const item of [value].flat()) form.append(name, item);
  const response = await fetch(endpoint, {
    method: init.method ?? 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...init.headers },
    ...(init.method === 'GET' ? {} : { body: form }),
  });
  return tokenCall(response);
}

/** Reads a token endpoint response: status, headers, the raw text and (if it is JSON) the body. */
export async function tokenCall(response: Response): Promise<TokenCall> {
  const text = await response.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = {};
  }
  return { status: response.status, headers: response.headers, body, text };
}

export { LoopbackIssuer, generateTestKey };
