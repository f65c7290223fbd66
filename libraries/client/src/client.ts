import { obtainSubjectToken, type SourceKind, type SourceOptions, type SubjectToken } from './sources.js';

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_SPIFFE = 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe';

/** RFC 8693 §2.2.1 success body. */
export interface ExchangedToken {
  readonly access_token: string;
  readonly issued_token_type?: string;
  readonly token_type: string;
  readonly expires_in: number;
  readonly scope?: string;
}

export interface ExchangeRequest {
  readonly audience: readonly string[];
  readonly scope?: readonly string[];
  readonly requestedTokenType?: string;
}

/** How the workload authenticates to the broker as a client. */
export type ClientCredentials =
  | { readonly kind: 'public'; readonly clientId: string }
  | { readonly kind: 'secret'; readonly clientId: string; readonly secret: string }
  /** The subject JWT-SVID doubles as client assertion (spiffe_jwt clients). */
  | { readonly kind: 'spiffe-svid' };

export interface TesseraClientOptions {
  /** The broker's issuer URL; `subject` tokens are requested for this audience. */
  readonly broker: string;
  /** Default `<broker>/token`. */
  readonly tokenEndpoint?: string;
  readonly client: ClientCredentials;
  readonly from: SourceKind;
  readonly source?: Omit<SourceOptions, 'audience' | 'signal'> & { readonly audience?: string };
  readonly timeoutMs?: number;
  /** Replaced in tests; defaults to global fetch. */
  readonly fetch?: typeof fetch;
}

/** The broker refused: its RFC 6749 error code and description, as sent. */
export class ExchangeError extends Error {
  override readonly name = 'ExchangeError';
  constructor(
    readonly status: number,
    readonly code: string,
    description: string | undefined,
  ) {
    super(`broker answered ${status} ${code}${description ? `: ${description}` : ''}`);
  }
}

interface Cached {
  readonly token: ExchangedToken;
  readonly refreshAt: number;
}

/**
 * Obtains the workload's own token from its platform, exchanges it at Tessera, and keeps the result
 * until 80 % of its lifetime has passed, so callers can ask for a token on every request.
 */
export class TesseraClient {
  readonly #cache = new Map<string, Cached>();
  readonly #pending = new Map<string, Promise<ExchangedToken>>();

  constructor(private readonly options: TesseraClientOptions) {
    // The subject token and any client secret travel in the request: never in clear off this host.
    const url = new URL(options.tokenEndpoint ?? options.broker);
    const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname);
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) throw new TypeError('the broker must be reached over https (http only on loopback)');
  }

  async token(request: ExchangeRequest): Promise<ExchangedToken> {
    const key = JSON.stringify([request.audience, request.scope ?? [], request.requestedTokenType ?? '']);
    const cached = this.#cache.get(key);
    if (cached && Date.now() < cached.refreshAt) return cached.token;
    let pending = this.#pending.get(key);
    if (!pending) {
      pending = this.exchange(request).finally(() => this.#pending.delete(key));
      this.#pending.set(key, pending);
    }
    const token = await pending;
    this.#cache.set(key, { token, refreshAt: Date.now() + token.expires_in * 800 });
    return token;
  }

  /** One exchange, no cache. */
  async exchange(request: ExchangeRequest): Promise<ExchangedToken> {
    const signal = AbortSignal.timeout(this.options.timeoutMs ?? 15_000);
    const subject: SubjectToken = await obtainSubjectToken(this.options.from, {
      ...this.options.source,
      audience: this.options.source?.audience ?? this.options.broker,
      signal,
    });
    const form = new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: subject.token, subject_token_type: subject.tokenType });
    for (const audience of request.audience) form.append('audience', audience);
    if (request.scope && request.scope.length > 0) form.set('scope', request.scope.join(' '));
    if (request.requestedTokenType) form.set('requested_token_type', request.requestedTokenType);
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
    const client = this.options.client;
    if (client.kind === 'public') form.set('client_id', client.clientId);
    if (client.kind === 'secret') headers.authorization = `Basic ${Buffer.from(`${formEncode(client.clientId)}:${formEncode(client.secret)}`).toString('base64')}`;
    if (client.kind === 'spiffe-svid') {
      form.set('client_assertion_type', JWT_SPIFFE);
      form.set('client_assertion', subject.token);
    }
    const endpoint = this.options.tokenEndpoint ?? `${this.options.broker.replace(/\/$/, '')}/token`;
    const response = await (this.options.fetch ?? fetch)(endpoint, { method: 'POST', headers, body: form, signal, redirect: 'error' });
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new ExchangeError(response.status, 'invalid_response', 'the broker did not answer JSON');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ExchangeError(response.status, 'invalid_response', 'the broker did not answer a JSON object');
    const body = parsed as Record<string, unknown>;
    if (!response.ok) throw new ExchangeError(response.status, String(body.error ?? 'unknown_error'), typeof body.error_description === 'string' ? body.error_description : undefined);
    if (typeof body.access_token !== 'string' || typeof body.expires_in !== 'number') throw new ExchangeError(response.status, 'invalid_response', 'no access_token or expires_in');
    return body as unknown as ExchangedToken;
  }
}

/** RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding. */
function formEncode(value: string): string {
  return encodeURIComponent(value).replace(/%20/g, '+');
}
