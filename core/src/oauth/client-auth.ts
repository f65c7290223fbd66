import { createLocalJWKSet, jwtVerify, type JWTVerifyGetKey } from 'jose';
import {
  acceptedUntil,
  CLIENT_ASSERTION_TYPE_JWT_BEARER,
  CLIENT_ASSERTION_TYPE_JWT_SPIFFE,
  decodeUnverifiedJwt,
  InvalidClient,
  InvalidRequest,
  InvalidToken,
  isCompactJws,
  OAuthError,
  TemporarilyUnavailable,
  type AuthenticatedClient,
  type BrokerInfo,
  type ClientAssertionVerifier,
  type Clock,
  type JwksCache,
  type Logger,
  type ReplayStore,
  type TokenTypeUrn,
  type VerifiedIdentity,
} from '@tessera/plugin-sdk';
import { ConfigError } from '../config/errors.js';
import type { BrokerConfig, ClientConfig } from '../config/schema.js';
import { compilePattern, type Matcher } from '../policy/patterns.js';
import { checkIdentity } from './identity-checks.js';
import { storeAnswer } from '../state/unavailable.js';
import { hashClientSecret, parseScryptHash, verifyClientSecret, type ScryptHash } from './client-secret.js';
import type { TokenRequest } from './request.js';
import { inSpan } from '../telemetry/tracing.js';
import { CallBudget } from './call-budget.js';

type ClientAuthOptions = BrokerConfig['clientAuth'];

interface RegisteredClient {
  readonly config: ClientConfig;
  readonly secret?: ScryptHash;
  readonly keys?: JWTVerifyGetKey;
  readonly algorithms?: readonly string[];
}

const MAX_ASSERTION_BYTES = 16_384;

/** Client auth methods whose assertions a plugin verifies, by assertion type. */
const PLUGIN_ASSERTION_METHODS: ReadonlyMap<string, 'spiffe_jwt'> = new Map([[CLIENT_ASSERTION_TYPE_JWT_SPIFFE, 'spiffe_jwt']]);

export interface ClientAuthDeps {
  readonly jwks: JwksCache;
  readonly replay: ReplayStore;
  readonly clock: Clock;
  readonly broker: BrokerInfo;
  /** Plugin verifiers by `client_assertion_type`. */
  readonly assertionVerifiers?: ReadonlyMap<string, ClientAssertionVerifier>;
  /** Time budget of a plugin verification (it may fetch keys). */
  readonly verificationTimeoutMs?: number;
  readonly log?: Logger;
}

/** Per-call narrowing of what a client assertion may be addressed to. */
export interface AuthenticateOptions {
  /**
   * The URL of the endpoint being called, accepted as `aud` in place of the token endpoint (the issuer
   * stays accepted unless `assertionAudience: issuer`). An endpoint other than /token passes its own URL,
   * so that an assertion made for the token endpoint, captured before use, cannot be spent there.
   */
  readonly endpointUrl?: string;
}

/**
 * RFC 6749 §2.3 and RFC 7523 §2.2: authenticates the client of a token request by exactly one method.
 * Every failure is `invalid_client` (401 with a challenge); the reason goes to the audit record only.
 */
export class ClientAuthenticator {
  readonly #clients: ReadonlyMap<string, RegisteredClient>;
  /** spiffe_jwt clients: SPIFFE ID patterns, tried in config order. */
  readonly #workloadClients: readonly { readonly matches: Matcher; readonly config: ClientConfig }[];
  /** The only values a client assertion's `aud` may hold (`clientAuth.assertionAudience`). */
  readonly #assertionAudiences: ReadonlySet<string>;
  #decoy?: Promise<ScryptHash>;

  constructor(
    clients: readonly ClientConfig[],
    private readonly options: ClientAuthOptions,
    private readonly deps: ClientAuthDeps,
  ) {
    this.#assertionAudiences = new Set(options.assertionAudience === 'issuer' ? [deps.broker.issuer] : [deps.broker.issuer, deps.broker.tokenEndpoint]);
    this.#workloadClients = clients.filter((config) => config.auth.method === 'spiffe_jwt').map((config) => ({ matches: compilePattern(config.id), config }));
    this.#clients = new Map(
      clients.filter((config) => config.auth.method !== 'spiffe_jwt').map((config) => [config.id, this.#register(config, clients.indexOf(config))]),
    );
  }

  /** Assertion types some configured client needs a plugin verifier for. */
  requiredAssertionTypes(): string[] {
    return [...PLUGIN_ASSERTION_METHODS]
      .filter(([, method]) => this.#workloadClients.some((client) => client.config.auth.method === method))
      .map(([type]) => type);
  }

  /** Methods in use by configured clients, for RFC 8414 metadata. */
  methodsSupported(): string[] {
    const configs = [...[...this.#clients.values()].map((client) => client.config), ...this.#workloadClients.map((client) => client.config)];
    return [...new Set(configs.map((config) => config.auth.method))];
  }

  signingAlgorithms(): string[] {
    const algorithms = [...this.#clients.values()].flatMap((client) => client.algorithms ?? []);
    return [...new Set(algorithms.length > 0 ? algorithms : this.options.algorithms)];
  }

  clientConfig(id: string): ClientConfig | undefined {
    return this.#clients.get(id)?.config ?? this.#workloadClient(id);
  }

  #workloadClient(spiffeId: string): ClientConfig | undefined {
    return spiffeId.startsWith('spiffe://') ? this.#workloadClients.find((client) => client.matches(spiffeId))?.config : undefined;
  }

  /** One span per call; the client is named on it only once authenticated, never what was presented. */
  authenticate(request: TokenRequest, options: AuthenticateOptions = {}): Promise<AuthenticatedClient> {
    return inSpan('authenticate client', {}, async (span) => {
      const client = await this.#authenticate(request, options);
      span.setAttributes({ 'tessera.client.id': client.id, 'tessera.client.auth_method': client.authMethod });
      return client;
    });
  }

  async #authenticate(request: TokenRequest, options: AuthenticateOptions): Promise<AuthenticatedClient> {
    const basic = request.authorization !== undefined;
    const post = request.get('client_secret') !== undefined;
    const assertion = request.get('client_assertion') !== undefined || request.get('client_assertion_type') !== undefined;
    // RFC 6749 §2.3: one method per request.
    if (Number(basic) + Number(post) + Number(assertion) > 1) {
      throw new InvalidRequest('more than one client authentication method', { detail: 'client_auth: multiple methods' });
    }
    if (basic) return this.#basic(request);
    if (post) return this.#secretPost(request);
    if (assertion) return this.#assertion(request, this.#audiencesFor(options));
    const clientId = request.get('client_id');
    if (clientId === undefined) throw new InvalidClient('client authentication required', { detail: 'client_auth: none presented' });
    const client = this.#clients.get(clientId);
    if (client?.config.auth.method !== 'none') throw new InvalidClient(undefined, { detail: 'client_auth: public access not allowed for client' });
    return { id: clientId, authMethod: 'none' };
  }

  async #basic(request: TokenRequest): Promise<AuthenticatedClient> {
    const header = request.authorization!;
    const match = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header.trim());
    if (!match) throw new InvalidClient(undefined, { detail: 'client_auth: unsupported Authorization scheme' });
    const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw new InvalidClient(undefined, { detail: 'client_auth: malformed basic credentials' });
    // RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
    const id = formDecode(decoded.slice(0, colon));
    const secret = formDecode(decoded.slice(colon + 1));
    if (id === undefined || secret === undefined) throw new InvalidClient(undefined, { detail: 'client_auth: malformed basic credentials' });
    const bodyId = request.get('client_id');
    if (bodyId !== undefined && bodyId !== id) throw new InvalidClient(undefined, { detail: 'client_auth: client_id mismatch' });
    return this.#checkSecret(id, secret, 'client_secret_basic');
  }

  async #secretPost(request: TokenRequest): Promise<AuthenticatedClient> {
    const id = request.get('client_id');
    if (id === undefined) throw new InvalidClient(undefined, { detail: 'client_auth: client_secret without client_id' });
    return this.#checkSecret(id, request.get('client_secret')!, 'client_secret_post');
  }

  async #checkSecret(id: string, secret: string, method: 'client_secret_basic' | 'client_secret_post'): Promise<AuthenticatedClient> {
    const client = this.#clients.get(id);
    if (!client?.secret || client.config.auth.method !== method) {
      // Same work as a real check, so response time does not reveal which client ids exist.
      await verifyClientSecret(secret, await this.#decoyHash());
      throw new InvalidClient(undefined, { detail: client ? `client_auth: client does not use ${method}` : 'client_auth: unknown client' });
    }
    if (!(await verifyClientSecret(secret, client.secret))) throw new InvalidClient(undefined, { detail: 'client_auth: wrong secret' });
    return { id, authMethod: method };
  }

  #audiencesFor(options: AuthenticateOptions): ReadonlySet<string> {
    if (options.endpointUrl === undefined) return this.#assertionAudiences;
    return new Set(this.options.assertionAudience === 'issuer' ? [this.deps.broker.issuer] : [this.deps.broker.issuer, options.endpointUrl]);
  }

  async #assertion(request: TokenRequest, audiences: ReadonlySet<string>): Promise<AuthenticatedClient> {
    const type = request.get('client_assertion_type');
    const assertion = request.get('client_assertion');
    if (type !== undefined && assertion !== undefined && PLUGIN_ASSERTION_METHODS.has(type)) return this.#pluginAssertion(request, type, assertion, audiences);
    if (type !== CLIENT_ASSERTION_TYPE_JWT_BEARER || assertion === undefined) {
      throw new InvalidClient(undefined, { detail: 'client_auth: unsupported or missing client_assertion_type' });
    }
    if (assertion.length > MAX_ASSERTION_BYTES) throw new InvalidClient(undefined, { detail: 'client_auth: assertion too large' });
    if (!isCompactJws(assertion)) throw new InvalidClient(undefined, { detail: 'client_auth: assertion is not a compact JWS' });
    let unverifiedSubject: unknown;
    try {
      // The same gate as every validator: canonical, no duplicate members, registered claim types.
      const { header, payload } = decodeUnverifiedJwt(assertion, MAX_ASSERTION_BYTES);
      if (header.crit !== undefined) throw new InvalidToken('malformed', 'crit header');
      unverifiedSubject = payload.sub;
    } catch {
      throw new InvalidClient(undefined, { detail: 'client_auth: malformed assertion' });
    }
    // RFC 7523 §3: sub is the client_id; it only selects whose keys to try.
    const client = typeof unverifiedSubject === 'string' ? this.#clients.get(unverifiedSubject) : undefined;
    if (!client?.keys || client.config.auth.method !== 'private_key_jwt') {
      throw new InvalidClient(undefined, { detail: 'client_auth: unknown client or client does not use private_key_jwt' });
    }
    const id = client.config.id;
    const bodyId = request.get('client_id');
    if (bodyId !== undefined && bodyId !== id) throw new InvalidClient(undefined, { detail: 'client_auth: client_id mismatch' });

    const now = this.deps.clock.now();
    let payload;
    try {
      ({ payload } = await jwtVerify(assertion, client.keys, {
        issuer: id,
        subject: id,
        audience: [...audiences],
        algorithms: [...client.algorithms!],
        clockTolerance: this.options.clockSkewSeconds,
        currentDate: now,
        requiredClaims: ['iss', 'sub', 'aud', 'exp', 'jti'],
      }));
    } catch (error) {
      if (error instanceof OAuthError) throw error;
      const { code, claim } = error as { code?: string; claim?: string };
      throw new InvalidClient(undefined, { detail: `client_auth: assertion rejected (${code ?? 'verification failed'}${claim ? ` ${claim}` : ''})` });
    }
    // jose accepts an `aud` that merely contains one of ours; an assertion also naming anyone else could
    // have been obtained by that other party and replayed here (rfc7523bis audience injection).
    this.#checkAudience(typeof payload.aud === 'string' ? [payload.aud] : (payload.aud ?? []), audiences);
    this.#checkLifetime(now, payload.exp!, payload.iat);
    if (typeof payload.jti !== 'string') throw new InvalidClient(undefined, { detail: 'client_auth: bad jti' });
    // Remembered while the verifier above would accept it: exp plus the skew it was given.
    await this.#consumeJti(id, payload.jti, acceptedUntil(payload.exp!, this.options.clockSkewSeconds));
    return { id, authMethod: 'private_key_jwt' };
  }

  /**
   * An assertion type a plugin verifies (a JWT-SVID): the plugin proves who it speaks for, core maps that
   * identity to a configured client and applies the same lifetime and replay rules as private_key_jwt.
   * SPIRE reuses a cached JWT-SVID until it nears expiry and sets no `jti`, so single use is enforced only
   * when a `jti` is present; otherwise the short lifetime and the audience are the replay bound.
   */
  async #pluginAssertion(request: TokenRequest, type: string, assertion: string, audiences: ReadonlySet<string>): Promise<AuthenticatedClient> {
    if (assertion.length > MAX_ASSERTION_BYTES) throw new InvalidClient(undefined, { detail: 'client_auth: assertion too large' });
    const verifier = this.deps.assertionVerifiers?.get(type);
    if (!verifier) throw new InvalidClient(undefined, { detail: 'client_auth: unsupported client_assertion_type' });
    const now = this.deps.clock.now();
    // The same guards as subject validation: a budget even for a plugin that ignores the signal, and a
    // shape check, so a faulty plugin fails closed as invalid_client instead of a 500.
    const budget = new CallBudget(this.deps.verificationTimeoutMs ?? 5_000, () => new TemporarilyUnavailable('client verification timed out, retry later', { detail: 'client_auth: verification timeout' }));
    let identity: VerifiedIdentity;
    try {
      const verified = await Promise.race([
        verifier.verify(assertion, { role: 'client', tokenType: type as TokenTypeUrn, brokerIssuer: this.deps.broker.issuer, tokenEndpoint: this.deps.broker.tokenEndpoint, now, signal: budget.signal }),
        budget.expired,
      ]);
      identity = checkIdentity(verified, { tokenType: type, now, clockSkewSeconds: verifier.clockSkewSeconds, brokerAudiences: audiences });
    } catch (error) {
      // A trust-bundle outage (or the budget running out) is the broker's problem, not the client's: keep the 503.
      if (error instanceof TemporarilyUnavailable) throw error;
      if (!(error instanceof OAuthError)) this.deps.log?.error({ err: error, assertionType: type }, 'client assertion verifier plugin fault');
      const reason = error instanceof OAuthError ? (error.detail ?? error.code) : 'verifier plugin fault';
      throw new InvalidClient(undefined, { detail: `client_auth: assertion rejected (${reason})` });
    } finally {
      budget.end();
    }
    const id = identity.subject;
    const config = this.#workloadClient(id);
    if (!config || config.auth.method !== PLUGIN_ASSERTION_METHODS.get(type)) throw new InvalidClient(undefined, { detail: 'client_auth: no client matches the assertion subject' });
    const bodyId = request.get('client_id');
    if (bodyId !== undefined && bodyId !== id) throw new InvalidClient(undefined, { detail: 'client_auth: client_id mismatch' });
    this.#checkAudience(identity.audiences, audiences);
    const iat = typeof identity.claims.iat === 'number' ? identity.claims.iat : undefined;
    this.#checkLifetime(now, identity.expiresAt.getTime() / 1000, iat);
    if (identity.claims.jti !== undefined) {
      if (typeof identity.claims.jti !== 'string') throw new InvalidClient(undefined, { detail: 'client_auth: bad jti' });
      // Remembered while the plugin that verified it (and core, with the skew it declared) would accept it.
      await this.#consumeJti(id, identity.claims.jti, acceptedUntil(identity.expiresAt, verifier.clockSkewSeconds));
    }
    return { id, authMethod: PLUGIN_ASSERTION_METHODS.get(type)!, identity };
  }

  /** A client assertion is for this broker only: every `aud` value is one of ours, and there is one. */
  #checkAudience(audiences: readonly string[], accepted: ReadonlySet<string>): void {
    if (audiences.length === 0 || !audiences.every((audience) => accepted.has(audience))) {
      throw new InvalidClient(undefined, { detail: 'client_auth: assertion audience must name only this broker' });
    }
  }

  /** Long-lived assertions defeat replay protection: cap both the remaining and the declared lifetime. */
  #checkLifetime(now: Date, exp: number, iat: number | undefined): void {
    const nowSeconds = Math.floor(now.getTime() / 1000);
    const { assertionMaxLifetimeSeconds: maxLifetime, clockSkewSeconds: skew } = this.options;
    if (exp - nowSeconds > maxLifetime + skew || (iat !== undefined && exp - iat > maxLifetime)) {
      throw new InvalidClient(undefined, { detail: 'client_auth: assertion lifetime too long' });
    }
    if (iat !== undefined && iat > nowSeconds + skew) throw new InvalidClient(undefined, { detail: 'client_auth: assertion iat in the future' });
  }

  async #consumeJti(clientId: string, jti: string, acceptedUntil: Date): Promise<void> {
    if (jti.length === 0 || jti.length > 256) throw new InvalidClient(undefined, { detail: 'client_auth: bad jti' });
    // A store that cannot answer is a 503, never "replayed" (invalid_client) nor "first use".
    if (!(await storeAnswer(this.deps.replay.consume(`client-assertion:${JSON.stringify([clientId, jti])}`, acceptedUntil), 'replay'))) {
      throw new InvalidClient(undefined, { detail: 'client_auth: assertion replayed' });
    }
  }

  #register(config: ClientConfig, index: number): RegisteredClient {
    const { auth } = config;
    switch (auth.method) {
      case 'client_secret_basic':
      case 'client_secret_post': {
        const secret = parseScryptHash(auth.secretHash);
        if (!secret) throw new ConfigError([`clients[${index}].auth.secretHash: not a valid scrypt hash`]);
        return { config, secret };
      }
      case 'private_key_jwt': {
        let keys: JWTVerifyGetKey;
        try {
          keys = auth.jwks ? createLocalJWKSet(auth.jwks as Parameters<typeof createLocalJWKSet>[0]) : this.deps.jwks.remote(auth.jwksUri!);
        } catch {
          throw new ConfigError([`clients[${index}].auth.jwks: not a valid JWK Set`]);
        }
        return { config, keys, algorithms: auth.algorithms ?? this.options.algorithms };
      }
      case 'none':
      case 'spiffe_jwt':
        return { config };
    }
  }

  /** Costs like a configured client's hash, so unknown ids answer as slowly as known ones. */
  #decoyHash(): Promise<ScryptHash> {
    const model = [...this.#clients.values()].find((client) => client.secret)?.secret;
    this.#decoy ??= model
      ? Promise.resolve({ ...model, salt: Buffer.alloc(model.salt.length, 1) })
      : hashClientSecret('decoy').then((encoded) => parseScryptHash(encoded)!);
    return this.#decoy;
  }
}

function formDecode(value: string): string | undefined {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '));
  } catch {
    return undefined;
  }
}
