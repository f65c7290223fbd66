import { execFile } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLI, freePort, killServes, Serve, until } from './serve.js';
import { API, ID_TOKEN, LoopbackIssuer, postToken, servedBroker, TestClient, TOKEN_EXCHANGE } from './support.js';

afterEach(killServes);

const run = promisify(execFile);
const DOC = 'docs/operations.md';

/** The yaml block of the guide's Tracing section. */
async function documentedTracingBlock(): Promise<string> {
  const doc = await readFile(resolve(import.meta.dirname, '../..', DOC), 'utf8');
  const section = doc.slice(doc.indexOf('\n## Tracing\n'));
  const start = section.indexOf('```yaml\n') + '```yaml\n'.length;
  return section.slice(start, section.indexOf('```', start));
}

interface Export {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/** A loopback OTLP/HTTP receiver: keeps every POST /v1/traces and answers as a collector does. */
class OtlpReceiver {
  readonly exports: Export[] = [];
  private constructor(private readonly server: Server) {}

  static async start(): Promise<OtlpReceiver> {
    const server = createServer();
    const receiver = new OtlpReceiver(server);
    server.on('request', (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        receiver.exports.push({ path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) });
        const json = req.headers['content-type'] === 'application/json';
        res.writeHead(200, { 'content-type': json ? 'application/json' : 'application/x-protobuf' }).end(json ? '{}' : '');
      });
    });
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    return receiver;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1/traces`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((done) => this.server.close(() => done()));
  }
}

interface OtlpJsonSpan {
  readonly name: string;
  readonly traceId: string;
  readonly parentSpanId?: string;
  readonly attributes?: readonly { key: string; value: Record<string, unknown> }[];
}

/** Resource attributes and spans of OTLP/JSON export bodies. */
function readJsonExports(exports: readonly Export[]): { resource: Record<string, unknown>; spans: OtlpJsonSpan[] } {
  const resource: Record<string, unknown> = {};
  const spans: OtlpJsonSpan[] = [];
  for (const { body } of exports) {
    const document = JSON.parse(body.toString('utf8')) as {
      resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] }; scopeSpans: { spans: OtlpJsonSpan[] }[] }[];
    };
    for (const { resource: { attributes }, scopeSpans } of document.resourceSpans) {
      for (const { key, value } of attributes) resource[key] = value.stringValue;
      for (const scope of scopeSpans) spans.push(...scope.spans);
    }
  }
  return { resource, spans };
}

const TRACE_ID = '0af7651916cd43dd8448eb211c80319c';

let idp: LoopbackIssuer;
let client: TestClient;
let receiver: OtlpReceiver;
beforeAll(async () => {
  idp = await LoopbackIssuer.start();
  client = await TestClient.create('otlp-client');
  receiver = await OtlpReceiver.start();
});
afterAll(async () => {
  await receiver?.close();
  await idp?.close();
});

async function serveWithTracing(tracing: Record<string, unknown>): Promise<{ serve: Serve; issuer: string }> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'tessera-tracing-'));
  const issuer = `http://127.0.0.1:${port}`;
  const path = join(dir, 'broker.json');
  await writeFile(path, JSON.stringify({ issuer, ...servedBroker(idp.issuer, client), tracing }));
  return { serve: await Serve.start(path, port), issuer };
}

describe('tessera serve with tracing', () => {
  it('exports the spans of a request to the configured OTLP/HTTP endpoint, and flushes them on shutdown', async () => {
    receiver.exports.length = 0;
    const { serve, issuer } = await serveWithTracing({
      exporter: 'otlp',
      endpoint: receiver.endpoint,
      protocol: 'http/json',
      serviceName: 'tessera-e2e',
      headers: { 'x-collector-key': 'collector-secret' },
    });
    expect(await serve.waitForLog('tracing: exporting spans over OTLP')).toMatchObject({ protocol: 'http/json', endpoint: receiver.endpoint, sampleRatio: 1 });
    const subjectToken = await idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 600 });
    const call = await postToken(
      `${issuer}/token`,
      { grant_type: TOKEN_EXCHANGE, subject_token: subjectToken, subject_token_type: ID_TOKEN, audience: API, scope: 'read', ...(await client.auth(`${issuer}/token`)) },
      { headers: { traceparent: `00-${TRACE_ID}-b7ad6b7169203331-01` } },
    );
    expect(call.status).toBe(200);
    // serve propagates W3C trace context: the caller's trace id is the request id.
    expect(call.headers.get('x-request-id')).toBe(TRACE_ID);

    serve.child.kill('SIGTERM');
    await serve.exited;
    expect(serve.exit).toMatchObject({ code: 0 });
    // The batch delay is longer than this test: the export came from the flush at shutdown.
    await until('an OTLP export', () => receiver.exports.length > 0);

    expect(receiver.exports.every((item) => item.path === '/v1/traces' && item.headers['content-type'] === 'application/json')).toBe(true);
    expect(receiver.exports[0]!.headers['x-collector-key']).toBe('collector-secret');
    const { resource, spans } = readJsonExports(receiver.exports);
    expect(resource).toMatchObject({ 'service.name': 'tessera-e2e' });
    const request = spans.filter((span) => span.traceId === TRACE_ID);
    expect(request.map((span) => span.name).sort()).toEqual(['POST /token', 'authenticate client', 'issue access-token', 'policy decide', 'validate oidc']);
    expect(request.find((span) => span.name === 'POST /token')!.parentSpanId).toBe('b7ad6b7169203331');
    const exported = receiver.exports.map((item) => item.body.toString('utf8')).join('\n');
    expect(exported).not.toContain(subjectToken);
    expect(exported).not.toContain(call.body.access_token as string);
  }, 60_000);

  it('speaks OTLP http/protobuf by default', async () => {
    receiver.exports.length = 0;
    const { serve, issuer } = await serveWithTracing({ exporter: 'otlp', endpoint: receiver.endpoint });
    expect((await fetch(`${issuer}/healthz`)).status).toBe(200);
    serve.child.kill('SIGTERM');
    await serve.exited;
    await until('an OTLP export', () => receiver.exports.length > 0);
    expect(receiver.exports[0]!.headers['content-type']).toBe('application/x-protobuf');
    // The span name travels as a protobuf string field.
    expect(receiver.exports.some((item) => item.body.includes('GET /healthz'))).toBe(true);
  }, 60_000);

  it(`accepts the block of ${DOC} as written, and prints it with the exporter header redacted`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-tracing-doc-'));
    await writeFile(join(dir, 'otel-key'), 'collector-api-key\n');
    const block = (await documentedTracingBlock()).replace('/run/secrets/otel-key', join(dir, 'otel-key'));
    expect(block).toContain('exporter: otlp');
    const path = join(dir, 'broker.yaml');
    await writeFile(path, `issuer: https://broker.example\nkeys: { generate: true }\n${block}`);
    await run(process.execPath, [CLI, 'config', 'validate', path]);
    const { stdout } = await run(process.execPath, [CLI, 'config', 'print', '--resolved', path]);
    expect(stdout).toMatch(/x-api-key: .?<redacted>/);
    expect(stdout).not.toContain('collector-api-key');
    expect(stdout).toContain('sampleRatio: 0.1');
  });

  it('answers as usual while the collector is down, and still exits 0 promptly', async () => {
    const { serve, issuer } = await serveWithTracing({ exporter: 'otlp', endpoint: `http://127.0.0.1:${await freePort()}/v1/traces` });
    const subjectToken = await idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 600 });
    const call = await postToken(`${issuer}/token`, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: subjectToken,
      subject_token_type: ID_TOKEN,
      audience: API,
      ...(await client.auth(`${issuer}/token`)),
    });
    expect(call.status).toBe(200);
    const signalledAt = Date.now();
    serve.child.kill('SIGTERM');
    await serve.exited;
    expect(serve.exit).toMatchObject({ code: 0 });
    // The final export gives up after its 5 s timeout.
    expect(serve.exit!.at - signalledAt).toBeLessThan(12_000);
    expect(serve.logged('tracing: export problem') ?? serve.logged('tracing: the last spans could not be exported')).toBeDefined();
  }, 60_000);

  it('sends nothing with the default exporter none', async () => {
    receiver.exports.length = 0;
    const { serve, issuer } = await serveWithTracing({ endpoint: receiver.endpoint });
    expect(serve.logged('tracing:')).toBeUndefined();
    const response = await fetch(`${issuer}/healthz`);
    // Without an SDK the request id is a fresh UUID, as before tracing existed.
    expect(response.headers.get('x-request-id')).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    serve.child.kill('SIGTERM');
    await serve.exited;
    expect(receiver.exports).toEqual([]);
  }, 60_000);
});
