import { UpstreamError, type FetchJsonOptions, type HttpFetcher } from '@tessera/plugin-sdk';

export interface GuardedFetcherOptions {
  readonly allowLoopbackHttp: boolean;
  readonly timeoutMs: number;
  readonly maxResponseBytes: number;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])$/;

/**
 * The only way plugins reach the network. URLs come from operator config, never from tokens; still, every
 * fetch is HTTPS (loopback HTTP only when allowed), follows no redirect (a redirect could leave the
 * configured host), and is capped in time and size.
 */
export class GuardedFetcher implements HttpFetcher {
  constructor(
    private readonly options: GuardedFetcherOptions,
    private readonly fetchImpl: typeof fetch = globalThis.fetch,
  ) {}

  async getJson(target: string, options: FetchJsonOptions = {}): Promise<unknown> {
    const url = this.#checkUrl(target);
    const maxBytes = options.maxBytes ?? this.options.maxResponseBytes;
    const timeout = AbortSignal.timeout(options.timeoutMs ?? this.options.timeoutMs);
    const signal = options.signal ? AbortSignal.any([timeout, options.signal]) : timeout;
    let response: Response;
    try {
      response = await this.fetchImpl(url, { redirect: 'manual', signal, headers: { accept: 'application/json' } });
    } catch (cause) {
      throw new UpstreamError(`fetch ${url.origin} failed`, { cause });
    }
    if (response.status !== 200) {
      await response.body?.cancel().catch(() => undefined);
      throw new UpstreamError(`fetch ${url.origin} answered HTTP ${response.status}`);
    }
    const text = await readCapped(response, maxBytes, url);
    try {
      return JSON.parse(text) as unknown;
    } catch (cause) {
      throw new UpstreamError(`fetch ${url.origin} returned invalid JSON`, { cause });
    }
  }

  #checkUrl(target: string): URL {
    if (!URL.canParse(target)) throw new UpstreamError('not an absolute URL');
    const url = new URL(target);
    if (url.username || url.password) throw new UpstreamError('URL carries credentials');
    if (url.protocol === 'https:') return url;
    if (url.protocol === 'http:' && LOOPBACK.test(url.hostname) && this.options.allowLoopbackHttp) return url;
    throw new UpstreamError(`refusing ${url.protocol} fetch to ${url.host}: https required`);
  }
}

async function readCapped(response: Response, maxBytes: number, url: URL): Promise<string> {
  const declared = Number(response.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw new UpstreamError(`response from ${url.origin} exceeds ${maxBytes} bytes`);
  }
  if (!response.body) return '';
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for await (const chunk of response.body) {
      total += chunk.byteLength;
      if (total > maxBytes) {
        await response.body.cancel().catch(() => undefined);
        throw new UpstreamError(`response from ${url.origin} exceeds ${maxBytes} bytes`);
      }
      chunks.push(chunk);
    }
  } catch (error) {
    if (error instanceof UpstreamError) throw error;
    throw new UpstreamError(`reading ${url.origin} failed`, { cause: error });
  }
  return Buffer.concat(chunks).toString('utf8');
}
