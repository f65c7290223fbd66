import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rename, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { connect } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TestPki } from '../../core/test/support/test-pki.js';
import { CLI, freePort, Serve, until } from './serve.js';
import { accessTokenPlugin, allowRule, API, ID_TOKEN, LoopbackIssuer, oidcPlugin, TestClient, TOKEN_EXCHANGE, servedBroker } from './support.js';

const DOC = resolve(import.meta.dirname, '../../docs/operations.md');

/** The ```yaml block after `<!-- tested: FILE -->` in the operations guide. */
async function docBlock(file: string): Promise<string> {
  const text = await readFile(DOC, 'utf8');
  const marker = text.indexOf(`<!-- tested: ${file} -->`);
  const match = /```yaml\n([\s\S]*?)```/.exec(text.slice(marker));
  if (marker < 0 || !match) throw new Error(`docs/operations.md: no example block marked ${file}`);
  return match[1]!;
}
const docPemBlock = () => docBlock('test/e2e/tls.test.ts');

const started = new Set<Serve>();
afterEach(() => {
  for (const serve of started) if (serve.exit === undefined) serve.child.kill('SIGKILL');
  started.clear();
});

let idp: LoopbackIssuer;
let client: TestClient;
let pki: TestPki;
beforeAll(async () => {
  idp = await LoopbackIssuer.start();
  client = await TestClient.create('tls-client');
  pki = await TestPki.create();
});
afterAll(async () => {
  await idp?.close();
});

function post(url: string, form: Record<string, string>): Promise<{ status: number; body: Record<string, unknown> }> {
  const body = new URLSearchParams(form).toString();
  return new Promise((done, fail) => {
    const req = request(url, { method: 'POST', ca: pki.caPem, agent: false, headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => done({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> }));
    });
    req.once('error', fail);
    req.end(body);
  });
}

function fingerprint(port: number): Promise<string> {
  return new Promise((done, fail) => {
    const socket = connect({ host: '127.0.0.1', port, ca: pki.caPem }, () => {
      done(socket.getPeerX509Certificate()!.fingerprint256);
      socket.destroy();
    });
    socket.once('error', fail);
  });
}

describe('tessera serve over TLS (the operations guide example)', () => {
  it('exchanges over HTTPS for a client trusting the CA, and serves a replaced certificate without a restart', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-tls-e2e-'));
    const port = await freePort();
    const issuer = `https://127.0.0.1:${port}`;
    const first = await pki.issue();
    await mkdir(join(dir, 'tls'));
    await writeFile(join(dir, 'tls', 'tls.crt'), first.certPem);
    await writeFile(join(dir, 'tls', 'tls.key'), first.keyPem);
    // The guide's block as written, then a layer naming this test's issuer, IdP and client.
    await writeFile(join(dir, 'listen.yaml'), await docPemBlock());
    await writeFile(
      join(dir, 'broker.json'),
      JSON.stringify({
        issuer,
        ...servedBroker(idp.issuer, client),
        listen: { host: '127.0.0.1' },
      }),
    );
    const child = spawn(process.execPath, [CLI, 'serve', '--config', join(dir, 'listen.yaml'), '--config', join(dir, 'broker.json')], {
      env: { ...process.env, PORT: String(port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const serve = new Serve(child, port);
    started.add(serve);
    await until('the listening line', () => serve.stderr.includes('tessera listening on') || serve.exit !== undefined, 30_000);
    expect(serve.stderr).toContain(`tessera listening on https://127.0.0.1:${port} (issuer ${issuer})`);

    const subjectToken = await idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 600 });
    const exchanged = await post(`${issuer}/token`, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: subjectToken,
      subject_token_type: ID_TOKEN,
      audience: API,
      ...(await client.auth(issuer)),
    });
    expect(exchanged.status, JSON.stringify(exchanged.body)).toBe(200);
    expect(exchanged.body).toHaveProperty('access_token');
    expect(await fingerprint(port)).toBe(first.fingerprint);

    const second = await pki.issue();
    await writeFile(join(dir, 'tls', 'tls.crt.tmp'), second.certPem);
    await writeFile(join(dir, 'tls', 'tls.key.tmp'), second.keyPem);
    await rename(join(dir, 'tls', 'tls.key.tmp'), join(dir, 'tls', 'tls.key'));
    await rename(join(dir, 'tls', 'tls.crt.tmp'), join(dir, 'tls', 'tls.crt'));
    await serve.waitForLog('tls: certificate reloaded from the PEM files');
    expect(serve.logged('tls: certificate reloaded')).toMatchObject({ fingerprint: second.fingerprint });
    expect(await fingerprint(port)).toBe(second.fingerprint);

    serve.child.kill('SIGTERM');
    await serve.exited;
    expect(serve.exit).toMatchObject({ code: 0 });
  }, 60_000);

  it('accepts the guide\'s X.509-SVID example as config (test/interop/tls-spire.test.ts serves it from SPIRE)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-tls-e2e-'));
    await writeFile(join(dir, 'spiffe.yaml'), `${await docBlock('test/interop/tls-spire.test.ts')}keys:\n  generate: true\n`);
    const child = spawn(process.execPath, [CLI, 'config', 'validate', join(dir, 'spiffe.yaml')], { stdio: ['ignore', 'pipe', 'pipe'] });
    const run = new Serve(child, 0);
    await run.exited;
    expect(run.exit?.code, run.stderr).toBe(0);
  });

  it('refuses an http issuer with listen.tls', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-tls-e2e-'));
    await writeFile(join(dir, 'listen.yaml'), await docPemBlock());
    await writeFile(join(dir, 'broker.json'), JSON.stringify({ issuer: 'http://127.0.0.1:8443' }));
    const child = spawn(process.execPath, [CLI, 'config', 'validate', join(dir, 'listen.yaml'), join(dir, 'broker.json')], { stdio: ['ignore', 'pipe', 'pipe'] });
    const serve = new Serve(child, 0);
    await serve.exited;
    expect(serve.exit?.code).toBe(1);
    expect(serve.stderr).toContain('issuer: must be https when listen.tls is set');
  });
});
