import { context, propagation, SpanKind } from '@opentelemetry/api';
import type { Context, Next } from 'koa';
import { markFailed, tracer, traceIdOf } from '../telemetry/tracing.js';
import { chooseRequestId } from './request-id.js';

const OAUTH_CODE = /^[a-z_]{1,64}$/;

/**
 * The server span of one request (HTTP semantic conventions) and its request id. A W3C `traceparent`
 * makes the caller's span the parent; without an SDK the propagator and the span are no-ops. Only the
 * path is recorded, never the query, headers or body: those carry tokens and client credentials.
 */
export async function traceRequests(ctx: Context, next: Next): Promise<void> {
  const parent = propagation.extract(context.active(), ctx.headers);
  const attributes = {
    'http.request.method': ctx.method,
    'url.scheme': ctx.protocol,
    'url.path': ctx.path,
    'network.protocol.version': ctx.req.httpVersion,
    ...(ctx.socket.remoteAddress ? { 'client.address': ctx.socket.remoteAddress } : {}),
  };
  await tracer.startActiveSpan(ctx.method, { kind: SpanKind.SERVER, attributes }, parent, async (span) => {
    const requestId = chooseRequestId(ctx.get('x-request-id') || undefined, traceIdOf(span));
    ctx.state.requestId = requestId;
    ctx.set('X-Request-Id', requestId);
    span.setAttribute('tessera.request_id', requestId);
    let escaped = false;
    try {
      await next();
    } catch (error) {
      escaped = true;
      throw error;
    } finally {
      const route = (ctx as { _matchedRoute?: unknown })._matchedRoute;
      if (typeof route === 'string') {
        span.updateName(`${ctx.method} ${route}`);
        span.setAttribute('http.route', route);
      }
      const status = escaped ? 500 : ctx.status;
      span.setAttribute('http.response.status_code', status);
      if (status >= 400) {
        // The OAuth error code (or not_found) the response carries; 4xx leaves the span status unset, as
        // the HTTP conventions ask of servers: the client's mistake is not the broker's failure.
        const body = ctx.body as { error?: unknown } | undefined;
        const code = typeof body?.error === 'string' && OAUTH_CODE.test(body.error) && !escaped ? body.error : String(status);
        span.setAttribute('tessera.oauth.error', code);
        if (status >= 500) markFailed(span, code);
      }
      span.end();
    }
  });
}
