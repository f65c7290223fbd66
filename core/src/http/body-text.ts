import getRawBody from 'raw-body';
import type { Context } from 'koa';
import { InvalidRequest } from '@tessera/plugin-sdk';

/** Reads at most `maxBytes` of an uncompressed UTF-8 request body. Shared by every front door's body reader. */
export async function readBodyText(ctx: Context, maxBytes: number): Promise<string> {
  const encoding = ctx.get('content-encoding');
  if (encoding && encoding.toLowerCase() !== 'identity') {
    throw new InvalidRequest('content encoding is not supported', { status: 415, detail: 'content encoding' });
  }
  try {
    return await getRawBody(ctx.req, { limit: maxBytes, length: ctx.get('content-length') || undefined, encoding: 'utf8' });
  } catch (error) {
    const type = (error as { type?: string }).type;
    if (type === 'entity.too.large') throw new InvalidRequest('request body too large', { status: 413, detail: 'body size' });
    throw new InvalidRequest('request body could not be read', { detail: `body: ${type ?? 'read error'}` });
  }
}
