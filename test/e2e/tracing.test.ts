import { context, propagation, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider, type ReadableSpan } from '@opentelemetry/sdk-trace';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { accessTokenPlugin, allowRule, API, ID_TOKEN, LoopbackIssuer, oidcPlugin, postToken, startBroker, TestClient, TOKEN_EXCHANGE, type RunningBroker } from './support.js';

// The SDK a host (or `tessera serve`) would register; the broker itself only talks to the API.
const exporter = new InMemorySpanExporter();
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const CALLER_SPAN_ID = '00f067aa0ba902b7';

let idp: LoopbackIssuer;
let client: TestClient;
let running: RunningBroker;

beforeAll(async () => {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  idp = await LoopbackIssuer.start();
  client = await TestClient.create('traced-client');
  // No JWKS cool-down: after the rotation below, the first request fetches the IdP's keys itself.
  running = await startBroker(
    (issuer) => ({
      clients: [client.config(['token_exchange'])],
      plugins: [oidcPlugin({ issuer: idp.issuer }), accessTokenPlugin],
      policy: { rules: [allowRule(idp.issuer)] },
    }),
    { jwks: { cooldownMs: 0 } },
  );
});
afterAll(async () => {
  await running?.close();
  await idp?.close();
  await provider.shutdown();
  trace.disable();
  propagation.disable();
  context.disable();
});
beforeEach(() => exporter.reset());

async function exchange(subjectToken: string, headers: Record<string, string> = {}, extra: Record<string, string> = {}) {
  const auth = await client.auth(running.tokenEndpoint);
  const call = await postToken(
    running.tokenEndpoint,
    { grant_type: TOKEN_EXCHANGE, subject_token: subjectToken, subject_token_type: ID_TOKEN, audience: API, scope: 'read', ...auth, ...extra },
    { headers },
  );
  return { call, assertion: auth.client_assertion! };
}

/** Spans of the one request made since the last reset, the server span first. */
function requestSpans(): { server: ReadableSpan; spans: ReadableSpan[]; named: (name: string) => ReadableSpan } {
  const spans = exporter.getFinishedSpans();
  const servers = spans.filter((span) => span.kind === SpanKind.SERVER);
  expect(servers).toHaveLength(1);
  const named = (name: string) => {
    const found = spans.filter((span) => span.name === name);
    expect(found, name).toHaveLength(1);
    return found[0]!;
  };
  return { server: servers[0]!, spans, named };
}

const nanos = ([seconds, nanoseconds]: readonly [number, number]) => BigInt(seconds) * 1_000_000_000n + BigInt(nanoseconds);
const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;
const idOf = (span: ReadableSpan) => span.spanContext().spanId;

/** Every attribute value of every span, and the status messages: where a token must never appear. */
function recordedStrings(spans: readonly ReadableSpan[]): string[] {
  return spans.flatMap((span) => [span.name, span.status.message ?? '', ...Object.values(span.attributes).flatMap((value) => [value].flat().map(String))]);
}

function expectNoneCarries(spans: readonly ReadableSpan[], secrets: readonly string[]): void {
  const recorded = recordedStrings(spans);
  for (const secret of secrets) {
    // Each JWS part on its own too: a truncated or decoded fragment would leak as much.
    for (const part of [secret, ...secret.split('.').filter((piece) => piece.length >= 16)]) {
      expect(recorded.filter((value) => value.includes(part))).toEqual([]);
    }
  }
}

describe('tracing', () => {
  it('records one span tree per exchange: request, client authentication, validation with its JWKS fetch, policy, issuing', async () => {
    await idp.rotate();
    const subjectToken = await idp.mint({ sub: 'alice', aud: running.issuer }, { expiresIn: 600 });
    const { call, assertion } = await exchange(subjectToken);
    expect(call.status).toBe(200);
    const { server, spans, named } = requestSpans();

    expect(server.name).toBe('POST /token');
    expect(server.parentSpanContext).toBeUndefined();
    expect(server.attributes).toMatchObject({
      'http.request.method': 'POST',
      'http.route': '/token',
      'url.path': '/token',
      'url.scheme': 'http',
      'http.response.status_code': 200,
    });
    expect(server.status.code).toBe(SpanStatusCode.UNSET);

    const auth = named('authenticate client');
    expect(auth.attributes).toEqual({ 'tessera.client.id': 'traced-client', 'tessera.client.auth_method': 'private_key_jwt' });
    const validate = named('validate oidc');
    expect(validate.attributes).toEqual({ 'tessera.plugin': 'oidc', 'tessera.token_type': ID_TOKEN, 'tessera.validation.role': 'subject' });
    const policy = named('policy decide');
    expect(policy.attributes).toEqual({ 'tessera.policy.allowed': true, 'tessera.policy.rule_id': 'idp-to-api' });
    const issue = named('issue access-token');
    expect(issue.attributes).toMatchObject({ 'tessera.plugin': 'access-token' });
    for (const child of [auth, validate, policy, issue]) {
      expect(parentOf(child), child.name).toBe(idOf(server));
      expect(child.status.code, child.name).toBe(SpanStatusCode.UNSET);
    }

    // The unknown kid made the validator fetch the rotated key set, inside its own span.
    const fetch = named('GET');
    expect(fetch.kind).toBe(SpanKind.CLIENT);
    expect(parentOf(fetch)).toBe(idOf(validate));
    expect(fetch.attributes).toMatchObject({ 'http.request.method': 'GET', 'url.full': idp.jwksUri, 'http.response.status_code': 200, 'server.address': '127.0.0.1' });

    for (const span of spans) expect(span.spanContext().traceId).toBe(server.spanContext().traceId);
    // Validation ended before policy started, policy before issuing. The SDK's clock is anchored to
    // Date.now() (millisecond steps) per span, so consecutive spans are ordered to within 1 ms.
    const CLOCK_STEP = 1_000_000n;
    expect(nanos(validate.endTime)).toBeLessThanOrEqual(nanos(policy.startTime) + CLOCK_STEP);
    expect(nanos(policy.endTime)).toBeLessThanOrEqual(nanos(issue.startTime) + CLOCK_STEP);

    expectNoneCarries(spans, [subjectToken, assertion, call.body.access_token as string]);
  });

  it('takes the audit request id from the trace when the caller sends no X-Request-Id, and echoes it', async () => {
    const { call } = await exchange(await idp.mint({ sub: 'alice', aud: running.issuer }, { expiresIn: 600 }));
    expect(call.status).toBe(200);
    const { server } = requestSpans();
    const traceId = server.spanContext().traceId;
    expect(running.audit.records.at(-1)!.requestId).toBe(traceId);
    expect(call.headers.get('x-request-id')).toBe(traceId);
    expect(server.attributes['tessera.request_id']).toBe(traceId);
  });

  it('continues the trace of an incoming traceparent, and keeps the caller X-Request-Id for the audit record', async () => {
    const { call } = await exchange(await idp.mint({ sub: 'alice', aud: running.issuer }, { expiresIn: 600 }), {
      traceparent: `00-${TRACE_ID}-${CALLER_SPAN_ID}-01`,
      'x-request-id': 'req-7f3a:build.42',
    });
    expect(call.status).toBe(200);
    const { server, spans } = requestSpans();
    expect(server.spanContext().traceId).toBe(TRACE_ID);
    expect(server.parentSpanContext).toMatchObject({ traceId: TRACE_ID, spanId: CALLER_SPAN_ID, isRemote: true });
    for (const span of spans) expect(span.spanContext().traceId).toBe(TRACE_ID);
    expect(running.audit.records.at(-1)!.requestId).toBe('req-7f3a:build.42');
    expect(call.headers.get('x-request-id')).toBe('req-7f3a:build.42');
  });

  it.each([
    ['too long', 'a'.repeat(129)],
    ['with a space', 'req 1'],
    ['with a quote', 'req"1'],
    ['with a newline escape', 'req\\n1'],
  ])('ignores an X-Request-Id %s and uses the trace id', async (_what, requestId) => {
    const { call } = await exchange(await idp.mint({ sub: 'alice', aud: running.issuer }, { expiresIn: 600 }), { 'x-request-id': requestId });
    expect(call.status).toBe(200);
    const { server } = requestSpans();
    expect(running.audit.records.at(-1)!.requestId).toBe(server.spanContext().traceId);
    expect(call.headers.get('x-request-id')).toBe(server.spanContext().traceId);
  });

  it('marks a refused subject token on its validation span with the OAuth error code only', async () => {
    const garbage = `eyJhbGciOiJFUzI1NiJ9.${'A'.repeat(40)}.${'B'.repeat(40)}`;
    const { call, assertion } = await exchange(garbage);
    expect(call.status).toBe(400);
    expect(call.body.error).toBe('invalid_request');
    const { server, spans, named } = requestSpans();
    const validate = named('validate oidc');
    expect(validate.status).toEqual({ code: SpanStatusCode.ERROR, message: 'invalid_request' });
    expect(validate.attributes['error.type']).toBe('invalid_request');
    // A 4xx is the client's: the server span names the code but is not an error (HTTP conventions).
    expect(server.status.code).toBe(SpanStatusCode.UNSET);
    expect(server.attributes).toMatchObject({ 'http.response.status_code': 400, 'tessera.oauth.error': 'invalid_request' });
    expect(spans.map((span) => span.name)).not.toContain('policy decide');
    expect(spans.map((span) => span.name)).not.toContain('issue access-token');
    expectNoneCarries(spans, [garbage, assertion]);
  });

  it('marks a failed client authentication with invalid_client', async () => {
    const subjectToken = await idp.mint({ sub: 'alice', aud: running.issuer }, { expiresIn: 600 });
    const stranger = await TestClient.create('traced-client');
    const forged = await stranger.assertion(running.tokenEndpoint);
    const call = await postToken(running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: subjectToken,
      subject_token_type: ID_TOKEN,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: forged,
    });
    expect(call.status).toBe(401);
    const { server, spans, named } = requestSpans();
    const auth = named('authenticate client');
    expect(auth.status).toEqual({ code: SpanStatusCode.ERROR, message: 'invalid_client' });
    // Who claimed to be the client is not recorded: only an authenticated client is named.
    expect(auth.attributes).toEqual({ 'error.type': 'invalid_client' });
    expect(server.attributes['tessera.oauth.error']).toBe('invalid_client');
    expect(spans.map((span) => span.name)).not.toContain('validate oidc');
    expectNoneCarries(spans, [subjectToken, forged]);
  });

  it('records a policy refusal on the policy span: not allowed, with the refusal code', async () => {
    const { call } = await exchange(await idp.mint({ sub: 'alice', aud: running.issuer }, { expiresIn: 600 }), {}, { audience: 'https://elsewhere.example.test' });
    expect(call.status).toBe(400);
    const { named } = requestSpans();
    const policy = named('policy decide');
    expect(policy.attributes).toMatchObject({ 'tessera.policy.allowed': false, 'error.type': call.body.error });
    expect(policy.status).toEqual({ code: SpanStatusCode.ERROR, message: call.body.error });
  });

  it('names an unmatched route by its method only, never by the raw path', async () => {
    const response = await fetch(`${running.issuer}/no/such/route?subject_token=secret-value`);
    expect(response.status).toBe(404);
    const { server, spans } = requestSpans();
    expect(server.name).toBe('GET');
    expect(server.attributes['http.route']).toBeUndefined();
    expect(server.attributes['tessera.oauth.error']).toBe('not_found');
    expectNoneCarries(spans, ['secret-value']);
  });
});
