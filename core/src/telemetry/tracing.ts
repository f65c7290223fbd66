import { createRequire } from 'node:module';
import { isSpanContextValid, SpanKind, SpanStatusCode, trace, type Attributes, type Span } from '@opentelemetry/api';
import { OAuthError } from '@tessera/plugin-sdk';

export const CORE_VERSION = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

/**
 * Spans go through the global API. With no SDK registered (a host that traces nothing, `serve` without
 * `tracing`), every call below is the API's no-op and costs a few allocations.
 */
export const tracer = trace.getTracer('@tessera/core', CORE_VERSION);

/**
 * Runs `work` in a child span of the active one. A refusal marks the span with its OAuth error code only:
 * descriptions and `detail` may echo request input, so they stay in the audit record and the logs.
 */
export function inSpan<T>(name: string, attributes: Attributes, work: (span: Span) => Promise<T>, kind: SpanKind = SpanKind.INTERNAL): Promise<T> {
  return tracer.startActiveSpan(name, { kind, attributes }, async (span) => {
    try {
      return await work(span);
    } catch (error) {
      markFailed(span, errorCode(error));
      throw error;
    } finally {
      span.end();
    }
  });
}

/** `error.type` and status ERROR, both carrying a fixed code (an OAuth error code, an HTTP status, a class name). */
export function markFailed(span: Span, code: string): void {
  span.setAttribute('error.type', code);
  span.setStatus({ code: SpanStatusCode.ERROR, message: code });
}

/** The OAuth error code of a refusal; anything else by its class name, never its message. */
export function errorCode(error: unknown): string {
  if (error instanceof OAuthError) return error.code;
  return error instanceof Error && /^[A-Za-z][\w]{0,63}$/.test(error.name) ? error.name : 'Error';
}

/** The trace id of `span` when an SDK made it a real one, else undefined. */
export function traceIdOf(span: Span): string | undefined {
  const context = span.spanContext();
  return isSpanContextValid(context) ? context.traceId : undefined;
}
