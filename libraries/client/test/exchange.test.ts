import 'reflect-metadata';
import { chmod, mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { LoopbackIssuer, sendJson, startLoopbackServer, type LoopbackServer } from '@tessera/plugin-testkit';
import { startContractBroker, type ContractBroker } from '@tessera/plugin-testkit/contract';
import { runExchangeCommand, SourceError, TesseraClient, TOKEN_TYPES } from '../src/index.js';

const API = 'https://api.example.test';

describe('tessera exchange', () => {
  let idp: LoopbackIssuer;
  let running: ContractBroker;
  let dir: string;

  beforeAll(async () => {
    idp = await LoopbackIssuer.start();
    dir = await mkdtemp(join(tmpdir(), 'tessera-client-'));
    // The broker trusts the loopback issuer for every token type the client may present in these tests.
    running = await startContractBroker(() => ({
      plugins: [
        { use: '@tessera/plugin-oidc', config: { tokenTypes: [TOKEN_TYPES['oidc-file'], TOKEN_TYPES.k8s, TOKEN_TYPES.gcp, TOKEN_TYPES.azure], issuers: [{ issuer: idp.issuer }] } },
        { use: '@tessera/plugin-access-token' },
      ],
      rules: [{ id: 'to-api', grant: { audiences: [API], scopes: ['read'], maxLifetimeSeconds: 300 } }],
    }));
  });
  afterAll(async () => {
    await running?.close();
    await idp?.close();
  });

  const run = async (args: string[]) => {
    let printed = '';
    const code = await runExchangeCommand(['--broker', running.issuer, '--client-id', 'contract-client', '--audience', API, ...args], (text) => void (printed += text));
    return { code, printed };
  };

  it('exchanges a token read from a file and prints the access token', async () => {
    const file = join(dir, 'token');
    await writeFile(file, `${await idp.mint({ sub: 'job-7', aud: running.issuer })}\n`);
    const { code, printed } = await run(['--from', 'oidc-file', '--token-file', file, '--scope', 'read']);
    expect(code).toBe(0);
    expect(decodeJwt(printed.trim())).toMatchObject({ sub: 'job-7', aud: API, scope: 'read' });
  });

  it('reuses a cached token until 80 % of its life, without calling the broker', async () => {
    const file = join(dir, 'k8s-token');
    await writeFile(file, await idp.mint({ sub: 'system:serviceaccount:payments:api', aud: running.issuer }));
    const cache = join(dir, 'cache.json');
    const first = await run(['--from', 'k8s', '--token-file', file, '--cache', cache, '--output', 'json']);
    const audited = running.audit.records.length;
    const second = await run(['--from', 'k8s', '--token-file', file, '--cache', cache, '--output', 'json']);
    expect(second.printed).toBe(first.printed);
    expect(running.audit.records.length).toBe(audited);
    // Past the refresh point, the next call exchanges again.
    const entry = JSON.parse(await readFile(cache, 'utf8')) as { refreshAt: number };
    await writeFile(cache, JSON.stringify({ ...entry, refreshAt: Date.now() - 1 }));
    const third = await run(['--from', 'k8s', '--token-file', file, '--cache', cache, '--output', 'json']);
    expect(third.printed).not.toBe(first.printed);
    expect(running.audit.records.length).toBe(audited + 1);
  });

  it('keeps its cache owner-only, and ignores a cache file others could have written', async () => {
    const file = join(dir, 'k8s-token-2');
    await writeFile(file, await idp.mint({ sub: 'system:serviceaccount:payments:web', aud: running.issuer }));
    const cache = join(dir, 'cache-2.json');
    await run(['--from', 'k8s', '--token-file', file, '--cache', cache]);
    expect((await stat(cache)).mode & 0o777).toBe(0o600);
    await chmod(cache, 0o644);
    const audited = running.audit.records.length;
    await run(['--from', 'k8s', '--token-file', file, '--cache', cache]);
    expect(running.audit.records.length).toBe(audited + 1);
  });

  it('refuses a broker reached in clear over the network', async () => {
    await expect(runExchangeCommand(['--broker', 'http://sts.example.com', '--from', 'k8s', '--audience', API])).rejects.toThrow(/https/);
  });

  it('reports plainly which side failed', async () => {
    const errors: string[] = [];
    const stderr = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((text: string) => (errors.push(text), true)) as typeof process.stderr.write;
    try {
      expect((await run(['--from', 'k8s', '--token-file', join(dir, 'missing')])).code).toBe(1);
      await writeFile(join(dir, 'expired'), await idp.mint({ sub: 'x', aud: running.issuer }, { expiresIn: -600 }));
      expect((await run(['--from', 'oidc-file', '--token-file', join(dir, 'expired')])).code).toBe(1);
    } finally {
      process.stderr.write = stderr;
    }
    expect(errors[0]).toMatch(/^tessera exchange: k8s: cannot read a token from .*missing/);
    expect(errors[1]).toBe('tessera exchange: broker answered 400 invalid_request: subject_token is invalid or not acceptable\n');
  });

  describe('from the GCP metadata server (google-auth-library)', () => {
    let metadata: LoopbackServer;
    const requests: string[] = [];
    const saved = { ...process.env };

    beforeAll(async () => {
      metadata = await startLoopbackServer((request: IncomingMessage, response: ServerResponse) => {
        requests.push(request.url ?? '');
        if (request.headers['metadata-flavor'] !== 'Google') return sendJson(response, 403, {});
        const url = new URL(request.url ?? '/', 'http://metadata');
        response.setHeader('Metadata-Flavor', 'Google');
        if (url.pathname === '/computeMetadata/v1/instance/service-accounts/default/identity') {
          void idp
            .mint({ sub: '1234567890', aud: url.searchParams.get('audience') ?? '', email: 'api@proj.iam.gserviceaccount.com', email_verified: true })
            .then((token) => {
              response.writeHead(200, { 'content-type': 'text/plain', 'metadata-flavor': 'Google' });
              response.end(token);
            });
          return;
        }
        sendJson(response, 404, {});
      });
      delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
      process.env.GCE_METADATA_HOST = `127.0.0.1:${metadata.port}`;
      process.env.METADATA_SERVER_DETECTION = 'assume-present';
    });
    afterAll(async () => {
      process.env = saved;
      await metadata?.close();
    });

    it('asks for a full-format ID token for the broker and exchanges it', async () => {
      const { code, printed } = await run(['--from', 'gcp']);
      expect(code).toBe(0);
      expect(decodeJwt(printed.trim())).toMatchObject({ sub: '1234567890', aud: API });
      const identity = requests.find((url) => url.includes('/identity'))!;
      expect(identity).toContain('format=full');
      expect(identity).toContain(`audience=${running.issuer}`);
    });
  });

  describe('from an Azure managed identity (@azure/identity)', () => {
    let msi: LoopbackServer;
    const saved = { ...process.env };
    let resource = '';

    beforeAll(async () => {
      // The App Service managed identity endpoint: IDENTITY_ENDPOINT + IDENTITY_HEADER.
      msi = await startLoopbackServer((request, response) => {
        const url = new URL(request.url ?? '/', 'http://msi');
        if (request.headers['x-identity-header'] !== 'msi-secret') return sendJson(response, 401, { error: 'no header' });
        resource = url.searchParams.get('resource') ?? '';
        void idp.mint({ sub: 'oid-1', aud: resource, oid: 'oid-1', tid: 'tenant' }, { expiresIn: 3600 }).then((token) =>
          sendJson(response, 200, { access_token: token, expires_on: String(Math.floor(Date.now() / 1000) + 3600), resource, token_type: 'Bearer' }),
        );
      });
      process.env.IDENTITY_ENDPOINT = `http://127.0.0.1:${msi.port}/msi/token`;
      process.env.IDENTITY_HEADER = 'msi-secret';
    });
    afterAll(async () => {
      process.env = saved;
      await msi?.close();
    });

    it('gets a token for the broker’s application and exchanges it', async () => {
      const { code, printed } = await run(['--from', 'azure']);
      expect(code).toBe(0);
      expect(resource).toBe(running.issuer);
      expect(decodeJwt(printed.trim())).toMatchObject({ sub: 'oid-1', aud: API });
    });
  });

  it('the library refreshes its in-memory token only after 80 % of the lifetime', async () => {
    const file = join(dir, 'lib-token');
    await writeFile(file, await idp.mint({ sub: 'lib', aud: running.issuer }));
    const client = new TesseraClient({ broker: running.issuer, client: { kind: 'public', clientId: 'contract-client' }, from: 'oidc-file', source: { tokenFile: file } });
    const [a, b] = await Promise.all([client.token({ audience: [API] }), client.token({ audience: [API] })]);
    expect(a).toBe(b);
    expect(await client.token({ audience: [API] })).toBe(a);
    await expect(new TesseraClient({ broker: running.issuer, client: { kind: 'public', clientId: 'x' }, from: 'spiffe', source: { spiffeEndpoint: 'nonsense' } }).exchange({ audience: [API] })).rejects.toBeInstanceOf(SourceError);
  });
});
