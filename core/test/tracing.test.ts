import { context, propagation, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { InvalidClient, UpstreamError } from '@tessera/plugin-sdk';
import { redactSecrets, REDACTED } from '../src/config/redact.js';
import { brokerConfigSchema } from '../src/config/schema.js';
import { GuardedFetcher } from '../src/http/fetcher.js';
import { restartOnlyChanges } from '../src/reload/config-diff.js';
import { chooseRequestId } from '../src/http/request-id.js';
import { errorCode, inSpan, traceIdOf } from '../src/telemetry/tracing.js';
import { startLoopbackServer, type LoopbackServer } from './support/loopback.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('chooseRequestId', () => {
  it('keeps an incoming id of safe characters, up to 128 of them', () => {
    for (const id of ['3f2c9a6e-1d7b-4c1e-9d7e-2b1f0c9a8e7d', '01HZX3Q9V2K8M4N6P7R5S3T1W0', 'req-42:a.b_c', 'x'.repeat(128)]) {
      expect(chooseRequestId(id, 'f'.repeat(32))).toBe(id);
    }
  });

  it('ignores an incoming id that is empty, too long, repeated or could break a log line or header', () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    for (const id of ['', 'x'.repeat(129), 'a, b', 'a b', 'a\tb', 'a"b', 'a\\b', 'a/b', '<script>', 'é', 'a\u0000b']) {
      expect(chooseRequestId(id, traceId), JSON.stringify(id)).toBe(traceId);
    }
  });

  it('falls back to a fresh UUID without an acceptable id or a trace', () => {
    expect(chooseRequestId(undefined, undefined)).toMatch(UUID);
    expect(chooseRequestId('a b', undefined)).toMatch(UUID);
    expect(chooseRequestId(undefined, undefined)).not.toBe(chooseRequestId(undefined, undefined));
  });
});

describe('tracing config', () => {
  it('defaults to no exporter, and config print shows exporter header names but not their values', () => {
    const config = brokerConfigSchema.parse({ issuer: 'https://broker.example' });
    expect(config.tracing).toEqual({ exporter: 'none', protocol: 'http/protobuf', serviceName: 'tessera', sampleRatio: 1, headers: {} });
    const written = { issuer: 'https://broker.example', tracing: { exporter: 'otlp', endpoint: 'https://otel.example/v1/traces', headers: { 'x-api-key': 'k-123' } } };
    expect(redactSecrets(written, brokerConfigSchema)).toMatchObject({ tracing: { endpoint: 'https://otel.example/v1/traces', headers: { 'x-api-key': REDACTED } } });
  });

  it('is restart-only: a reload that changes it is refused', () => {
    const running = brokerConfigSchema.parse({ issuer: 'https://broker.example' });
    const next = brokerConfigSchema.parse({ issuer: 'https://broker.example', tracing: { exporter: 'otlp', sampleRatio: 0.5 } });
    expect(restartOnlyChanges(running, next)).toEqual(['tracing']);
  });

  it('refuses a sample ratio outside 0..1 and an endpoint that is not http(s)', () => {
    for (const tracing of [{ sampleRatio: 1.5 }, { sampleRatio: -0.1 }, { endpoint: 'grpc://otel:4317' }, { endpoint: 'not a url' }, { exporter: 'jaeger' }]) {
      expect(brokerConfigSchema.safeParse({ issuer: 'https://broker.example', tracing }).success, JSON.stringify(tracing)).toBe(false);
    }
  });
});

describe('errorCode', () => {
  it('gives the OAuth error code of a refusal, the class name of anything else, never a message', () => {
    expect(errorCode(new InvalidClient(undefined, { detail: 'client_auth: secret mismatch' }))).toBe('invalid_client');
    expect(errorCode(new UpstreamError('fetch https://idp.example failed'))).toBe('UpstreamError');
    expect(errorCode(new TypeError('token eyJ... is bad'))).toBe('TypeError');
    expect(errorCode('a string')).toBe('Error');
  });
});

// Before any SDK is registered: the API's no-op spans have no trace id, so the request id stays a UUID.
describe('without an SDK', () => {
  it('runs work in a no-op span that has no trace id', async () => {
    const traceId = await inSpan('work', {}, async (span) => {
      expect(span.isRecording()).toBe(false);
      return traceIdOf(span);
    });
    expect(traceId).toBeUndefined();
  });
});

describe('with an SDK registered', () => {
  const exporter = new InMemorySpanExporter();
  const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  let server: LoopbackServer;

  beforeAll(async () => {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    trace.setGlobalTracerProvider(provider);
    server = await startLoopbackServer((req, res) => {
      if (req.url?.startsWith('/keys')) {
        res.setHeader('content-type', 'application/json');
        res.end('{"keys":[]}');
        return;
      }
      res.writeHead(503).end();
    });
  });
  afterAll(async () => {
    await server.close();
    await provider.shutdown();
    trace.disable();
    propagation.disable();
    context.disable();
  });
  beforeEach(() => exporter.reset());

  it('records a client span per fetch, its URL without the query', async () => {
    const fetcher = new GuardedFetcher({ allowLoopbackHttp: true, timeoutMs: 2_000, maxResponseBytes: 1_024 });
    await expect(fetcher.getJson(`${server.origin}/keys?api_key=do-not-record#frag`)).resolves.toEqual({ keys: [] });
    await fetcher.close();
    const [span, ...others] = exporter.getFinishedSpans();
    expect(others).toEqual([]);
    expect(span!.name).toBe('GET');
    expect(span!.kind).toBe(SpanKind.CLIENT);
    expect(span!.attributes).toEqual({
      'http.request.method': 'GET',
      'url.full': `${server.origin}/keys`,
      'server.address': '127.0.0.1',
      'server.port': Number(new URL(server.origin).port),
      'http.response.status_code': 200,
    });
    expect(span!.status.code).toBe(SpanStatusCode.UNSET);
  });

  it('marks a failed fetch as an error, with the status the upstream answered', async () => {
    const fetcher = new GuardedFetcher({ allowLoopbackHttp: true, timeoutMs: 2_000, maxResponseBytes: 1_024 });
    await expect(fetcher.getJson(`${server.origin}/down`)).rejects.toBeInstanceOf(UpstreamError);
    await fetcher.close();
    const [span] = exporter.getFinishedSpans();
    expect(span!.attributes).toMatchObject({ 'http.response.status_code': 503, 'error.type': 'UpstreamError' });
    expect(span!.status).toEqual({ code: SpanStatusCode.ERROR, message: 'UpstreamError' });
  });

  it('nests spans opened inside a span, and takes the request id from the trace', async () => {
    const traceId = await inSpan('outer', {}, async (outer) => {
      await inSpan('inner', {}, async () => undefined);
      return chooseRequestId(undefined, traceIdOf(outer));
    });
    const [inner, outer] = exporter.getFinishedSpans();
    expect(inner!.parentSpanContext?.spanId).toBe(outer!.spanContext().spanId);
    expect(traceId).toBe(outer!.spanContext().traceId);
  });

  it('marks a refusal with its code, not its description or detail', async () => {
    await expect(inSpan('refuse', {}, async () => Promise.reject(new InvalidClient(undefined, { detail: 'client_auth: bad secret for alice' })))).rejects.toBeInstanceOf(InvalidClient);
    const [span] = exporter.getFinishedSpans();
    expect(span!.status).toEqual({ code: SpanStatusCode.ERROR, message: 'invalid_client' });
    expect(span!.attributes).toEqual({ 'error.type': 'invalid_client' });
    expect(span!.events).toEqual([]);
  });
});
