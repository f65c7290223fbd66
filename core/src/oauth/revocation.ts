import type { JWTPayload } from 'jose';
import {
  InvalidGrant,
  InvalidRequest,
  OAuthError,
  ServerError,
  TemporarilyUnavailable,
  type BrokerInfo,
  type Clock,
  type KeyRing,
  type Logger,
  type RevocationList,
} from '@tessera/plugin-sdk';
import { MemoryStateStore } from '../state/memory-store.js';
import type { StateStore } from '../state/store.js';
import { storeAnswer } from '../state/unavailable.js';
import { recordOrRefuse, type AuditSink } from '../audit/audit-log.js';
import type { ClientAuthenticator } from './client-auth.js';
import { authenticateConfidential, ownTokenRecordFields, TOKEN_TYPE_HINTS, verifyOwnAccessToken, type OwnTokenTrace } from './own-tokens.js';
import type { TokenRequest } from './request.js';

/**
 * How long past `exp` a revoked token is remembered, and how long after `exp` a token is still worth
 * revoking: validators allow clock skew (at most 300 s anywhere in Tessera), so a token a few seconds past
 * `exp` may still be accepted and must stay revoked until no validator would take it.
 */
export const REVOCATION_MARGIN_SECONDS = 300;

/**
 * RFC 7009 revocations on the state store: `jti` → until when it stays revoked, shared by every replica on
 * the same store. A store outage rejects with `TemporarilyUnavailable`, never "not revoked".
 */
export class StoreRevocationList implements RevocationList {
  constructor(
    private readonly store: StateStore,
    private readonly clock: Clock,
  ) {}

  async revoke(jti: string, expiresAt: Date): Promise<void> {
    // Revoking again never shortens an entry (the store keeps the later expiry).
    await storeAnswer(this.store.put(`revoked:${jti}`, '1', expiresAt.getTime() - this.clock.now().getTime()), 'revocation list');
  }

  async isRevoked(jti: string): Promise<boolean> {
    const [entry] = await storeAnswer(this.store.getMany([`revoked:${jti}`]), 'revocation list');
    return entry !== undefined;
  }
}

/** Single-process revocation list (tests and embedding hosts): a `StoreRevocationList` on its own memory store. */
export class InMemoryRevocationList extends StoreRevocationList {
  readonly #store: MemoryStateStore;

  constructor(clock: Clock, sweepIntervalMs?: number) {
    const store = new MemoryStateStore(clock, sweepIntervalMs);
    super(store, clock);
    this.#store = store;
  }

  get size(): number {
    return this.#store.size;
  }
}

export interface RevocationEndpointDeps {
  readonly authenticator: ClientAuthenticator;
  readonly keyRing: KeyRing;
  readonly revocationList: RevocationList;
  readonly audit: AuditSink;
  readonly clock: Clock;
  readonly log: Logger;
  readonly broker: BrokerInfo;
  /** Tokens longer than this cannot be ones the broker issued (the ceiling of `limits.maxIssuedTokenBytes`). */
  readonly maxTokenBytes: number;
}

/** What became of one revocation request, for its audit record. */
interface RevocationTrace extends OwnTokenTrace {
  outcome?: 'revoked' | 'ignored';
}

/**
 * RFC 7009 revocation without HTTP: client authentication, then the token. Only access tokens this broker
 * issued can be revoked, by the client they were issued to; anything else that is not a live token of this
 * broker is answered 200 without effect (§2.2: no error the client could act on, and no oracle).
 */
export class RevocationEndpoint {
  constructor(private readonly deps: RevocationEndpointDeps) {}

  /** `readRequest` runs inside the audited scope, so transport refusals are recorded too. */
  async handle(readRequest: () => Promise<TokenRequest>, requestId: string): Promise<void> {
    const started = performance.now();
    const trace: RevocationTrace = {};
    try {
      await this.#revoke(await readRequest(), trace);
    } catch (caught) {
      const error = caught instanceof OAuthError ? caught : this.#fault(caught);
      await this.#record(requestId, started, trace, error);
      throw error;
    }
    // Unrecorded, the answer is 503: the client retries, and revoking again is harmless.
    await this.#record(requestId, started, trace);
  }

  async #revoke(request: TokenRequest, trace: RevocationTrace): Promise<void> {
    // §2.1: the server first validates the client credentials.
    const client = await authenticateConfidential(this.deps.authenticator, request, 'revocation', (authenticated) => (trace.client = authenticated));

    const hint = request.get('token_type_hint');
    if (hint !== undefined && TOKEN_TYPE_HINTS.has(hint)) trace.tokenTypeHint = hint;
    const token = request.get('token');
    if (token === undefined) throw new InvalidRequest('token is required', { detail: 'revocation: missing token' });

    const own = await this.#ownToken(token);
    if (!own.payload) {
      trace.outcome = 'ignored';
      trace.reason = own.reason;
      return;
    }
    const { jti, exp, client_id: issuedTo } = own.payload as { jti: string; exp: number; client_id: string };
    trace.jti = jti;
    // §2.1: then it verifies that the token was issued to the client making the request; if not, the request
    // is refused. RFC 6749 §5.2 names that case `invalid_grant` ("issued to another client"). This is no
    // oracle: the token is a signed JWT whose client_id anyone holding it can read and check against our JWKS.
    if (issuedTo !== client.id) throw new InvalidGrant('token was not issued to this client', { detail: 'revocation: token issued to another client' });
    try {
      await this.deps.revocationList.revoke(jti, new Date((exp + REVOCATION_MARGIN_SECONDS) * 1000));
    } catch (error) {
      if (error instanceof OAuthError) throw error;
      // §2.2.1: 503 tells the client the token may still be valid and to retry.
      this.deps.log.error({ err: error }, 'revocation list unavailable');
      throw new TemporarilyUnavailable('revocation is temporarily unavailable, retry later', { detail: 'revocation: list unavailable' });
    }
    trace.outcome = 'revoked';
  }

  /** The verified claims when `token` is a live access token this broker issued, with `jti` and `client_id`. */
  async #ownToken(token: string): Promise<{ payload?: JWTPayload; reason?: string }> {
    // A token within the margin past exp may still pass a skewed validator: still worth revoking.
    const own = await verifyOwnAccessToken(token, this.deps, { requiredClaims: ['exp', 'jti', 'client_id'], clockToleranceSeconds: REVOCATION_MARGIN_SECONDS, endpoint: 'revocation' });
    if (!own.payload) return own;
    const { jti, client_id: clientId } = own.payload;
    if (typeof jti !== 'string' || jti === '' || jti.length > 256 || typeof clientId !== 'string') return { reason: 'not a token of this broker (claims)' };
    return own;
  }

  #fault(error: unknown): OAuthError {
    this.deps.log.error({ err: error }, 'revocation endpoint fault');
    return new ServerError(undefined, { detail: 'unexpected error' });
  }

  #record(requestId: string, started: number, trace: RevocationTrace, error?: OAuthError): Promise<void> {
    return recordOrRefuse(this.deps.audit, { event: 'revoke', ...ownTokenRecordFields(requestId, started, trace, error), ...(trace.outcome ? { outcome: trace.outcome } : {}) }, this.deps.log);
  }
}
