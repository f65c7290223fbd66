import {
  GRANT_TYPE_CLIENT_CREDENTIALS,
  GRANT_TYPE_JWT_BEARER,
  GRANT_TYPE_TOKEN_EXCHANGE,
  InvalidRequest,
  OAuthError,
  ServerError,
  UnauthorizedClient,
  UnsupportedGrantType,
  type AuthenticatedClient,
  type BrokerInfo,
  type Clock,
  type Counter,
  type Histogram,
  type Logger,
  type Metrics,
} from '@tessera/plugin-sdk';
import { recordOrRefuse, type AuditIdentity, type AuditSink } from '../audit/audit-log.js';
import type { GrantTypeName } from '../config/schema.js';
import type { ClientAuthenticator } from './client-auth.js';
import { clientCredentials } from './client-credentials.js';
import type { ExchangePipeline, ExchangeTrace } from './exchange-pipeline.js';
import { jwtBearer } from './jwt-bearer.js';
import type { ClientRateLimiter } from './rate-limit.js';
import type { FrontDoor, TokenRequest } from './request.js';
import { tokenExchange } from './token-exchange.js';
import type { TokenResponse } from './token-response.js';

export const GRANT_TYPE_URIS: Readonly<Record<GrantTypeName, string>> = {
  token_exchange: GRANT_TYPE_TOKEN_EXCHANGE,
  jwt_bearer: GRANT_TYPE_JWT_BEARER,
  client_credentials: GRANT_TYPE_CLIENT_CREDENTIALS,
};
const GRANT_TYPE_BY_URI = new Map(Object.entries(GRANT_TYPE_URIS).map(([name, uri]) => [uri, name as GrantTypeName]));

export interface TokenEndpointDeps {
  readonly authenticator: ClientAuthenticator;
  readonly pipeline: ExchangePipeline;
  readonly audit: AuditSink;
  readonly clock: Clock;
  readonly log: Logger;
  readonly broker: BrokerInfo;
  readonly metrics: Metrics;
  /** Per-client limits (`clients[].rateLimit`, `limits.perClient`); absent when none is configured. */
  readonly rateLimiter?: ClientRateLimiter;
}

/** Metric names the token endpoint owns; plugins may not register them. */
export const TOKEN_ENDPOINT_METRICS = ['tessera_token_requests_total', 'tessera_token_request_duration_seconds'] as const;


/** The token endpoint without HTTP: grant_type → client auth → grant handler, one audit record per call. */
export class TokenEndpoint {
  readonly #requests: Counter;
  readonly #latency: Histogram;

  constructor(private readonly deps: TokenEndpointDeps) {
    this.#requests = deps.metrics.counter(TOKEN_ENDPOINT_METRICS[0], 'Token requests by front door, grant type and outcome', ['endpoint', 'grant_type', 'outcome']);
    this.#latency = deps.metrics.histogram(TOKEN_ENDPOINT_METRICS[1], 'Token request latency by front door and outcome', ['endpoint', 'outcome']);
  }

  /**
   * `readRequest` runs inside the audited scope, so transport refusals (method, content type, size,
   * repeated parameters) are recorded like any other denial.
   */
  async handle(readRequest: () => Promise<TokenRequest>, requestId: string, via: FrontDoor = 'token'): Promise<TokenResponse> {
    const started = performance.now();
    const trace: ExchangeTrace = {};
    let response: TokenResponse;
    try {
      response = await this.#dispatch(await readRequest(), trace);
    } catch (caught) {
      const error = caught instanceof OAuthError ? caught : this.#fault(caught, requestId);
      await this.#record(via, requestId, started, trace, error);
      throw error;
    }
    // The token leaves only once its record is stored; if that fails the one record never stands (503).
    await this.#record(via, requestId, started, trace);
    return response;
  }

  async #dispatch(request: TokenRequest, trace: ExchangeTrace): Promise<TokenResponse> {
    const grantTypeUri = request.get('grant_type');
    if (grantTypeUri === undefined) throw new InvalidRequest('grant_type is required', { detail: 'missing grant_type' });
    const grantType = GRANT_TYPE_BY_URI.get(grantTypeUri);
    if (!grantType) throw new UnsupportedGrantType(undefined, { detail: 'unknown grant_type' });
    trace.grantType = grantTypeUri;

    const client: AuthenticatedClient = await this.deps.authenticator.authenticate(request);
    trace.client = client;
    await this.deps.rateLimiter?.check(client.id);
    if (!this.deps.authenticator.clientConfig(client.id)?.grantTypes.includes(grantType)) {
      throw new UnauthorizedClient(undefined, { detail: `client not allowed ${grantType}` });
    }
    switch (grantType) {
      case 'token_exchange':
        return tokenExchange(request, client, this.deps.pipeline, trace);
      case 'jwt_bearer':
        return jwtBearer(request, client, this.deps.pipeline, trace);
      case 'client_credentials':
        return clientCredentials(request, client, this.deps.pipeline, trace, { brokerIssuer: this.deps.broker.issuer, now: this.deps.clock.now() });
    }
  }

  #fault(error: unknown, requestId: string): OAuthError {
    this.deps.log.error({ err: error, requestId }, 'token endpoint fault');
    return new ServerError(undefined, { detail: 'unexpected error' });
  }

  async #record(via: FrontDoor, requestId: string, started: number, trace: ExchangeTrace, error?: OAuthError): Promise<void> {
    const seconds = (performance.now() - started) / 1000;
    let outcome = error ? error.code : 'issued';
    try {
      await this.#audit(via, requestId, seconds, trace, error);
    } catch (refusal) {
      outcome = (refusal as OAuthError).code;
      throw refusal;
    } finally {
      this.#requests.inc({ endpoint: via, grant_type: (trace.grantType && GRANT_TYPE_BY_URI.get(trace.grantType)) ?? 'none', outcome });
      this.#latency.observe({ endpoint: via, outcome }, (performance.now() - started) / 1000);
    }
  }

  #audit(via: FrontDoor, requestId: string, seconds: number, trace: ExchangeTrace, error?: OAuthError): Promise<void> {
    return recordOrRefuse(this.deps.audit, {
      event: 'token',
      endpoint: via,
      decision: error ? 'deny' : 'allow',
      requestId,
      ...(trace.grantType ? { grantType: trace.grantType } : {}),
      ...(error ? { error: error.code, ...(error.detail ? { reason: error.detail } : {}) } : {}),
      ...(trace.client ? { client: { id: trace.client.id, authMethod: trace.client.authMethod } } : {}),
      ...(trace.subject ? { subject: auditIdentity(trace.subject) } : {}),
      ...(trace.actor ? { actor: auditIdentity(trace.actor) } : {}),
      ...(trace.chain && trace.chain.length > 0 ? { actorChain: trace.chain } : {}),
      ...(trace.requested ? { requested: trace.requested } : {}),
      ...(trace.ruleId ? { ruleId: trace.ruleId } : {}),
      ...(trace.issued ? { issued: trace.issued } : {}),
      latencyMs: Math.round(seconds * 100_000) / 100,
    }, this.deps.log);
  }
}

function auditIdentity(identity: { issuer: string; subject: string; tokenType: string }): AuditIdentity {
  return { issuer: identity.issuer, subject: identity.subject, tokenType: identity.tokenType };
}
