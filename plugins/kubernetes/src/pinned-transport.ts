import { RequestContext, ResponseContext, SelfDecodingBody, type PromiseHttpLibrary } from '@kubernetes/client-node';

/** Why the transport refused to complete a request. Carries no response content. */
export class TransportRefusal extends Error {
  override readonly name = 'TransportRefusal';
  constructor(readonly kind: 'origin' | 'redirect' | 'too_large' | 'body') {
    super(`cluster API request refused: ${kind}`);
  }
}

const MAX_RESPONSE_BYTES = 1_048_576;

/**
 * The last step of @kubernetes/client-node requests, for calls that carry a token: the client builds the
 * request (URL, credentials, TLS dispatcher from the kubeconfig) and parses the answer; this sends it.
 *
 * The client's default transport is `fetch` with `redirect: 'follow'`, which re-sends a POST body on 307
 * and 308: a redirect from the API server or anything in front of it would hand the reviewed token to
 * another host. Here requests go only to the cluster's origin, a redirect is a failure, the abort signal
 * is attached, and the response size is capped.
 */
export class PinnedTransport implements PromiseHttpLibrary {
  constructor(
    private readonly origin: string,
    private readonly signal: AbortSignal,
  ) {}

  async send(request: RequestContext): Promise<ResponseContext> {
    const url = new URL(request.getUrl());
    if (url.origin !== this.origin) throw new TransportRefusal('origin');
    const body = request.getBody();
    if (body !== undefined && typeof body !== 'string') throw new TransportRefusal('body');
    const method = request.getHttpMethod();
    const headers = request.getHeaders();
    const dispatcher = request.getDispatcher();

    let status: number;
    let responseHeaders: Record<string, string>;
    let content: Buffer;
    if (dispatcher) {
      // The kubeconfig's TLS settings (CA, client certificate, proxy) live in this dispatcher. Its plain
      // request API never follows redirects. The client library builds a new one per request, so it is
      // closed here: otherwise every review leaves an idle TLS connection behind.
      try {
        const response = await dispatcher.request({ origin: url.origin, path: `${url.pathname}${url.search}`, method, headers, body: body ?? null, signal: this.signal });
        status = response.statusCode;
        responseHeaders = flatten(response.headers);
        if (isRedirect(status)) {
          // Destroying an unread body errors it; nobody is left to listen, so swallow that one error.
          response.body.on('error', () => undefined).destroy();
          throw new TransportRefusal('redirect');
        }
        content = await readCapped(response.body);
      } finally {
        await (dispatcher as { destroy?: () => Promise<void> }).destroy?.().catch(() => undefined);
      }
    } else {
      // No kubeconfig TLS settings (system CAs, bearer credentials): the platform fetch, told not to follow.
      const response = await fetch(url, { method, headers, ...(body !== undefined ? { body } : {}), signal: this.signal, redirect: 'manual' });
      status = response.status;
      responseHeaders = Object.fromEntries(response.headers);
      if (isRedirect(status) || response.type === 'opaqueredirect') {
        await response.body?.cancel();
        throw new TransportRefusal('redirect');
      }
      content = response.body ? await readCapped(response.body) : Buffer.alloc(0);
    }
    return new ResponseContext(status, responseHeaders, new SelfDecodingBody(Promise.resolve(content)));
  }
}

function isRedirect(status: number): boolean {
  return status >= 300 && status < 400;
}

function flatten(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined) flat[name] = Array.isArray(value) ? value.join(', ') : value;
  return flat;
}

/** Leaving the loop early (the throw) cancels the stream and closes the connection. */
async function readCapped(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > MAX_RESPONSE_BYTES) throw new TransportRefusal('too_large');
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}
