import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeProtectedHeader } from 'jose';
import { createBroker, generatePrivateJwk, MemoryAuditSink, silentLogger, validateConfig, type Broker, type BrokerConfig } from '@tessera/core';
import { accessTokenPlugin, allowRule, API, LoopbackIssuer, oidcPlugin, postToken, TestClient } from './support.js';

let idp: LoopbackIssuer;
let client: TestClient;
let server: Server;
let issuer: string;
let broker: Broker;
let base: (extra?: Record<string, unknown>) => BrokerConfig;
let dataDir: string;

beforeAll(async () => {
  idp = await LoopbackIssuer.start();
  client = await TestClient.create('embedded-client');
  server = createServer();
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  dataDir = await mkdtemp(join(tmpdir(), 'tessera-reload-'));
  base = (extra = {}) =>
    validateConfig({
      issuer,
      dataDir,
      keys: { generate: true },
      network: { allowLoopbackHttp: true },
      clients: [client.config(['token_exchange'])],
      plugins: [oidcPlugin({ issuer: idp.issuer }), accessTokenPlugin],
      policy: { rules: [allowRule(idp.issuer)] },
      ...extra,
    });
  broker = await createBroker(base(), { logger: silentLogger, audit: new MemoryAuditSink() });
  // `callback()` follows reloads; `app.callback()` would stay with the first config.
  server.on('request', broker.callback());
});
afterAll(async () => {
  server?.closeAllConnections();
  await new Promise<void>((done) => server.close(() => done()));
  await broker?.close();
  await idp?.close();
});

const metadata = async () => (await (await fetch(`${issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;

describe('Broker.reload in an embedding host', () => {
  it('serves the RFC 8414 metadata of the config swapped in', async () => {
    expect((await metadata()).grant_types_supported).toEqual(['urn:ietf:params:oauth:grant-type:token-exchange']);
    const outcome = await broker.reload(base({ clients: [client.config(['token_exchange', 'client_credentials'])] }));
    expect(outcome).toMatchObject({ status: 'applied', generation: 2 });
    expect((await metadata()).grant_types_supported).toEqual(['urn:ietf:params:oauth:grant-type:token-exchange', 'client_credentials']);
    expect(broker.config.clients[0]!.grantTypes).toEqual(['token_exchange', 'client_credentials']);
    expect(broker.keys().published).toEqual([broker.keys().signing]);
  });

  it('rejects a changed issuer as needing a restart, and one without config files to read again', async () => {
    const running = broker.config;
    const moved = await broker.reload(validateConfig({ ...base(), issuer: 'http://127.0.0.1:1' }));
    expect(moved).toMatchObject({ status: 'rejected', problems: ['issuer: changed, which needs a restart; nothing was applied'] });
    expect(await broker.reload()).toMatchObject({ status: 'rejected', problems: [expect.stringContaining('no config files')] });
    expect(broker.config).toBe(running);
  });

  it('rejects a config whose checks fail while it is built, keeping the running one', async () => {
    const running = broker.config;
    const outcome = await broker.reload(base({ endpoints: { introspection: { clients: ['nobody'] } } }));
    expect(outcome).toMatchObject({ status: 'rejected', problems: [expect.stringContaining('endpoints.introspection.clients[0]')] });
    expect(broker.config).toBe(running);
    expect((await fetch(`${issuer}/readyz`)).status).toBe(200);
  });

  it('rejects a reload that drops the key of live tokens, keeping the running config and its key', async () => {
    const call = await postToken(`${issuer}/token`, {
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: await idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 3600 }),
      subject_token_type: 'urn:ietf:params:oauth:token-type:id_token',
      audience: API,
      scope: 'read',
      ...(await client.auth(`${issuer}/token`)),
    });
    expect(call.status).toBe(200);
    const oldKid = decodeProtectedHeader(call.body.access_token as string).kid!;
    const newKey = join(dataDir, 'next.jwk');
    await writeFile(newKey, JSON.stringify({ ...(await generatePrivateJwk('ES256')), kid: 'next' }));
    const running = broker.config;

    const dropped = await broker.reload(base({ keys: { files: [{ path: newKey }] } }));
    expect(dropped).toMatchObject({ status: 'rejected', problems: [expect.stringMatching(new RegExp(`^keys: key "${oldKid}" signed tokens valid until .*: keep it in keys.files with use: publish until then$`))] });
    expect(broker.config).toBe(running);
    expect(broker.keys()).toEqual({ signing: oldKid, published: [oldKid] });

    const kept = await broker.reload(base({ keys: { files: [{ path: newKey }, { path: join(dataDir, 'signing-key.jwk.json'), use: 'publish' }] } }));
    expect(kept).toMatchObject({ status: 'applied', keys: { signing: oldKid, next: { kid: 'next' }, published: ['next', oldKid] } });
  });
});
