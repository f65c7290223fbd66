import getRawBody from 'raw-body';
import type { Context } from 'koa';
import { InvalidRequest } from '@tessera/plugin-sdk';

// A leading byte-order mark is dropped (RFC 8259 §8.1 lets a parser ignore it), as the previous reader did.
const UTF8 = new TextDecoder('utf-8', { fatal: true });

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
  let bytes: Buffer;
  try {
    bytes = await getRawBody(ctx.req, { limit: maxBytes, length: ctx.get('content-length') || undefined });
  } catch (error) {
    const type = (error as { type?: string }).type;
    if (type === 'entity.too.large') throw new InvalidRequest('request body too large', { status: 413, detail: 'body size' });
    throw new InvalidRequest('request body could not be read', { detail: `body: ${type ?? 'read error'}` });
  }
  try {
    return UTF8.decode(bytes);
  } catch {
    throw new InvalidRequest('request body is not valid UTF-8', { detail: 'body encoding' });
  }
}
