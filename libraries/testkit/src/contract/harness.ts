import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBroker, MemoryAuditSink, silentLogger, validateConfig, type Broker } from '@tessera/core';
import type { SubjectValidator, TokenIssuer, TokenTypeUrn } from '@tessera/plugin-sdk';

/** A plugin as the broker config lists it. */
export interface PluginUnderTest {
  /** Package name, or an absolute path to the built module. */
  readonly use: string;
  readonly config?: unknown;
}

export const CONTRACT_CLIENT_ID = 'contract-client';

/** A real broker on loopback running the plugins under test (by default with an allow-everything policy). */
export interface ContractBroker {
  readonly broker: Broker;
  readonly issuer: string;
  readonly tokenEndpoint: string;
  readonly audit: MemoryAuditSink;
  validatorFor(tokenType: TokenTypeUrn): SubjectValidator;
  issuerFor(tokenType: TokenTypeUrn): TokenIssuer;
  /** POSTs a form to the token endpoint as the contract client. */
  post(form: Record<string, string>): Promise<{ status: number; body: Record<string, unknown>; text: string }>;
  close(): Promise<void>;
}

export interface ContractBrokerOptions {
  readonly plugins: readonly PluginUnderTest[];
  readonly network?: { readonly timeoutMs?: number };
  readonly validationTimeoutMs?: number;
  /** Policy rules (config form); default: one rule allowing any audience and the contract scopes. */
  readonly rules?: readonly Record<string, unknown>[];
  /** The broker's `delegation` block, e.g. the actor trust an operator grants the plugin. */
  readonly delegation?: Record<string, unknown>;
}

/**
 * Starts a broker through the public config path (`use:` + plugin block), exactly as an operator would.
 * The port is reserved first so the issuer, and so every audience, names the real address.
 */
export async function startContractBroker(
  build: (issuer: string) => ContractBrokerOptions,
): Promise<ContractBroker> {
  // Until the broker exists (plugins may fetch from it while starting), the address answers 503.
  let handle: RequestListener = (_request, response) => void response.writeHead(503).end();
  const server = createServer((request, response) => handle(request, response));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const options = build(issuer);
  const dataDir = await mkdtemp(join(tmpdir(), 'tessera-contract-'));
  const audit = new MemoryAuditSink();
  let broker: Broker;
  try {
    const config = validateConfig({
      issuer,
      dataDir,
      keys: { generate: true },
      network: { allowLoopbackHttp: true, ...(options.network?.timeoutMs ? { timeoutMs: options.network.timeoutMs } : {}) },
      ...(options.validationTimeoutMs ? { limits: { validationTimeoutMs: options.validationTimeoutMs } } : {}),
      log: { level: 'silent' },
      clients: [{ id: CONTRACT_CLIENT_ID, auth: { method: 'none' }, grantTypes: ['token_exchange'] }],
      plugins: options.plugins.map((plugin) => ({ use: plugin.use, config: plugin.config ?? {} })),
      ...(options.delegation ? { delegation: options.delegation } : {}),
      policy: {
        rules: options.rules ?? [{ id: 'contract-allow-all', grant: { audiences: ['**'], scopes: ['contract.read', 'contract.write'], maxLifetimeSeconds: 600 } }],
      },
    });
    broker = await createBroker(config, { logger: silentLogger, audit });
  } catch (error) {
    server.close();
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
  handle = broker.app.callback();
  const find = <P extends SubjectValidator | TokenIssuer>(providers: (plugin: Broker['plugins'][number]) => readonly P[] | undefined, type: TokenTypeUrn): P => {
    for (const plugin of broker.plugins) {
      for (const provider of providers(plugin) ?? []) if (provider.tokenTypes.includes(type)) return provider;
    }
    throw new Error(`no loaded plugin provides ${type}`);
  };
  return {
    broker,
    issuer,
    tokenEndpoint: `${issuer}/token`,
    audit,
    validatorFor: (type) => find((plugin) => plugin.provides.validators, type),
    issuerFor: (type) => find((plugin) => plugin.provides.issuers, type),
    async post(form) {
      const response = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ client_id: CONTRACT_CLIENT_ID, ...form }),
      });
      const text = await response.text();
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(text) as Record<string, unknown>;
      } catch {
        // Left empty: the contract asserts on the JSON shape.
      }
      return { status: response.status, body, text };
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await broker.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
