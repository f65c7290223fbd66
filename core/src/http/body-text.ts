import type { IncomingMessage } from 'node:http';
import getRawBody from 'raw-body';
import type { Context, Middleware } from 'koa';
import { InvalidRequest } from '@tessera/plugin-sdk';

// A leading byte-order mark is dropped (RFC 8259 §8.1 lets a parser ignore it), as the previous reader did.
const UTF8 = new TextDecoder('utf-8', { fatal: true });

export type Received = { readonly bytes: Buffer } | { readonly refused: InvalidRequest };

/**
 * One read per request. A stream can be read only once: a second reader would find it ended and refuse a
 * well-formed request, so every reader of a request shares the first read's bytes, or its refusal.
 */
const received = new WeakMap<IncomingMessage, Promise<Received>>();

/** Reads the raw request body once, at most `maxBytes` (the announced Content-Length is checked first); never rejects. */
export function receiveBody(ctx: Context, maxBytes: number): Promise<Received> {
  let body = received.get(ctx.req);
  if (body === undefined) {
    body = getRawBody(ctx.req, { limit: maxBytes, length: ctx.get('content-length') || undefined }).then(
      (bytes): Received => ({ bytes }),
      (error: unknown): Received => {
        const type = (error as { type?: string }).type;
        if (type === 'entity.too.large') return { refused: new InvalidRequest('request body too large', { status: 413, detail: 'body size' }) };
        return { refused: new InvalidRequest('request body could not be read', { detail: `body: ${type ?? 'read error'}` }) };
      },
    );
    received.set(ctx.req, body);
  }
  return body;
}

/**
 * Receives the body before admission control, so an in-flight slot covers only the work on a request that
 * has fully arrived: a client dribbling its body holds a connection (bounded by `limits.connections`),
 * never a slot. A body that cannot be read is not refused here but by the door's own reader, inside the
 * audited scope, with the refusal it would have got anyway.
 */
export function receiveBodyFirst(maxBytes: number): Middleware {
  return async (ctx, next) => {
    await receiveBody(ctx, maxBytes);
    await next();
  };
}

/**
 * Reads at most `maxBytes` of an uncompressed UTF-8 request body. Shared by every front door's body reader.
 * Bytes that are not UTF-8 refuse the request: decoding them to U+FFFD would let two different bodies
 * read as the same parameters.
 */
export async function readBodyText(ctx: Context, maxBytes: number): Promise<string> {
  const encoding = ctx.get('content-encoding');
  if (encoding && encoding.toLowerCase() !== 'identity') {
    throw new InvalidRequest('content encoding is not supported', { status: 415, detail: 'content encoding' });
  }
  const body = await receiveBody(ctx, maxBytes);
  if ('refused' in body) throw body.refused;
  try {
    return UTF8.decode(body.bytes);
  } catch {
    throw new InvalidRequest('request body is not valid UTF-8', { detail: 'body encoding' });
  }
}
