import type { JWTPayload } from 'jose';
import {
  InvalidRequest,
  OAuthError,
  ServerError,
  TemporarilyUnavailable,
  type AuthenticatedClient,
  type BrokerInfo,
  type Clock,
  type KeyRing,
  type Logger,
  type RevocationList,
} from '@tessera/plugin-sdk';
import { recordOrRefuse, type AuditSink } from '../audit/audit-log.js';
import type { ClientAuthenticator } from './client-auth.js';
import { authenticateConfidential, ownTokenRecordFields, TOKEN_TYPE_HINTS, verifyOwnAccessToken, type OwnTokenTrace } from './own-tokens.js';
import type { TokenRequest } from './request.js';
import { KillSwitchQuery, type KillSwitch } from '../state/kill-switch.js';

/**
 * How far in the future `iat` may lie: another replica with a slightly fast clock may have issued the token.
 * The same 30 s the access-token plugin allows for the broker's own tokens. `exp` gets no tolerance: the
 * broker's own clock answers, so "active" means unexpired now, which is what RFC 7662 §4 asks.
 */
const ISSUED_AT_SKEW_SECONDS = 30;

const MAX_JTI_LENGTH = 256;

/** A hint is a registry name: printable ASCII, no spaces, short. Anything else is a malformed request. */
const TOKEN_TYPE_HINT_SYNTAX = /^[\x21-\x7e]{1,64}$/;

/** RFC 7662 §2.2: for any token the caller may not learn about, only this (no other member). */
export const INACTIVE: Readonly<{ active: false }> = Object.freeze({ active: false });

/** RFC 7662 §2.2 members for an active token of this broker, plus the RFC 8693 §4.1 `act` chain. */
export interface ActiveIntrospection {
  readonly active: true;
  readonly scope?: string;
  readonly client_id: string;
  readonly sub: string;
  readonly aud: string | readonly string[];
  readonly iss: string;
  readonly exp: number;
  readonly iat: number;
  readonly nbf?: number;
  readonly jti: string;
  readonly token_type: 'Bearer';
  readonly act?: Readonly<Record<string, unknown>>;
}

export type IntrospectionResponse = ActiveIntrospection | typeof INACTIVE;

export interface IntrospectionEndpointDeps {
  readonly authenticator: ClientAuthenticator;
  readonly keyRing: KeyRing;
  readonly revocationList: RevocationList;
  readonly audit: AuditSink;
  readonly clock: Clock;
  readonly log: Logger;
  readonly broker: BrokerInfo;
  /** Tokens longer than this cannot be ones the broker issued (the ceiling of `limits.maxIssuedTokenBytes`). */
  readonly maxTokenBytes: number;
  /** `endpoints.introspection.clients`: clients (resource servers) that may introspect any token of this broker. */
  readonly clients: readonly string[];
  /** Kill-switch entries: a token whose jti, subject, client or chain is revoked is inactive. */
  readonly killSwitch?: KillSwitch;
}

/** What became of one introspection request, for its audit record. */
interface IntrospectionTrace extends OwnTokenTrace {
  active?: boolean;
}

/**
 * RFC 7662 introspection without HTTP: client authentication, then the token. Only access tokens this
 * broker issued can be active. A client sees a token whose `aud` names it or that was issued to it
 * (`client_id`); the clients in `endpoints.introspection.clients` see every token. Any other token,
 * and every token that is foreign, malformed, expired or revoked, is answered `{"active": false}` (§2.2),
 * so the answer never tells the caller which of those it was.
 */
export class IntrospectionEndpoint {
  readonly #everyToken: ReadonlySet<string>;

  constructor(private readonly deps: IntrospectionEndpointDeps) {
    this.#everyToken = new Set(deps.clients);
  }

  /** `readRequest` runs inside the audited scope, so transport refusals are recorded too. */
  async handle(readRequest: () => Promise<TokenRequest>, requestId: string): Promise<IntrospectionResponse> {
    const started = performance.now();
    const trace: IntrospectionTrace = {};
    let response: IntrospectionResponse;
    try {
      response = await this.#introspect(await readRequest(), trace);
      trace.active = response.active;
    } catch (caught) {
      const error = caught instanceof OAuthError ? caught : this.#fault(caught);
      await this.#record(requestId, started, trace, error);
      throw error;
    }
    // What a token carries is disclosed only once the disclosure is on record.
    await this.#record(requestId, started, trace);
    return response;
  }

  async #introspect(request: TokenRequest, trace: IntrospectionTrace): Promise<IntrospectionResponse> {
    // §2.1: the endpoint is protected; §2.3: bad client credentials get 401.
    const client = await authenticateConfidential(this.deps.authenticator, request, 'introspection', (authenticated) => (trace.client = authenticated));

    // §2.1: the server may ignore the hint; it never changes the answer here.
    const hint = request.get('token_type_hint');
    if (hint !== undefined) {
      if (!TOKEN_TYPE_HINT_SYNTAX.test(hint)) throw new InvalidRequest('token_type_hint is malformed', { detail: 'introspection: token_type_hint syntax' });
      if (TOKEN_TYPE_HINTS.has(hint)) trace.tokenTypeHint = hint;
    }
    const token = request.get('token');
    if (token === undefined) throw new InvalidRequest('token is required', { detail: 'introspection: missing token' });

    const own = await this.#ownToken(token);
    if (!own.claims) {
      trace.reason = own.reason;
      return INACTIVE;
    }
    const claims = own.claims;
    trace.jti = claims.jti;
    if (!this.#mayIntrospect(client, claims)) {
      trace.reason = 'not visible to this client';
      return INACTIVE;
    }
    // Checked last, and only for a caller allowed to see the token: an outage then tells nobody else anything.
    let revoked: string | undefined;
    try {
      // Both lookups at once: one round trip's wait on a shared store.
      const [listed, killed] = await Promise.all([
        this.deps.revocationList.isRevoked(claims.jti),
        // The caller too: a killed resource server learns nothing more about any token.
        this.deps.killSwitch?.match(new KillSwitchQuery().ownTokenClaims(claims).client(client.id)),
      ]);
      revoked = listed ? 'revoked' : killed ? `kill switch: ${killed.kind} entry` : undefined;
    } catch (error) {
      if (error instanceof OAuthError) throw error;
      // Neither answer would be true: "active" could be a revoked token, "inactive" refuses a valid one.
      this.deps.log.error({ err: error }, 'revocation list unavailable');
      throw new TemporarilyUnavailable('introspection is temporarily unavailable, retry later', { detail: 'introspection: revocation list unavailable' });
    }
    if (revoked) {
      trace.reason = revoked;
      return INACTIVE;
    }
    return claims;
  }

  /** Its audience, the client it was issued to, and the configured resource servers. */
  #mayIntrospect(client: AuthenticatedClient, claims: ActiveIntrospection): boolean {
    if (this.#everyToken.has(client.id) || claims.client_id === client.id) return true;
    return (typeof claims.aud === 'string' ? [claims.aud] : claims.aud).includes(client.id);
  }

  /**
   * The response members when `token` is a live access token this broker issued (its keys, its issuer,
   * `typ` at+jwt, the RFC 9068 §2.2 claims well-formed); otherwise why it is not, as a fixed reason.
   */
  async #ownToken(token: string): Promise<{ claims?: ActiveIntrospection; reason?: string }> {
    const own = await verifyOwnAccessToken(token, this.deps, { requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id'], endpoint: 'introspection' });
    if (!own.payload) return own;
    const nowSeconds = Math.floor(this.deps.clock.now().getTime() / 1000);
    if ((own.payload.iat as number) > nowSeconds + ISSUED_AT_SKEW_SECONDS) return { reason: 'not yet valid' };
    const claims = activeClaims(own.payload);
    return claims ? { claims } : { reason: 'not a token of this broker (claims)' };
  }

  #fault(error: unknown): OAuthError {
    this.deps.log.error({ err: error }, 'introspection endpoint fault');
    return new ServerError(undefined, { detail: 'unexpected error' });
  }

  #record(requestId: string, started: number, trace: IntrospectionTrace, error?: OAuthError): Promise<void> {
    return recordOrRefuse(this.deps.audit, { event: 'introspect', ...ownTokenRecordFields(requestId, started, trace, error), ...(trace.active !== undefined ? { active: trace.active } : {}) }, this.deps.log);
  }
}

/** The §2.2 members of a verified payload, or undefined when a claim is not what this broker writes. */
function activeClaims(payload: JWTPayload): ActiveIntrospection | undefined {
  const { iss, sub, aud, exp, iat, nbf, jti, client_id: clientId, scope, act } = payload;
  if (typeof iss !== 'string' || typeof sub !== 'string' || sub === '' || typeof clientId !== 'string' || clientId === '') return undefined;
  if (typeof jti !== 'string' || jti === '' || jti.length > MAX_JTI_LENGTH) return undefined;
  if (typeof exp !== 'number' || typeof iat !== 'number' || (nbf !== undefined && typeof nbf !== 'number')) return undefined;
  if (!(typeof aud === 'string' || (Array.isArray(aud) && aud.length > 0 && aud.every((item) => typeof item === 'string')))) return undefined;
  if (scope !== undefined && typeof scope !== 'string') return undefined;
  if (act !== undefined && (typeof act !== 'object' || act === null || Array.isArray(act))) return undefined;
  return {
    active: true,
    ...(scope !== undefined ? { scope } : {}),
    client_id: clientId,
    sub,
    aud,
    iss,
    exp,
    iat,
    ...(nbf !== undefined ? { nbf } : {}),
    jti,
    token_type: 'Bearer',
    // RFC 8693 §4.1: the chain exactly as signed, current actor outermost, older actors nested inside.
    ...(act !== undefined ? { act: act as Record<string, unknown> } : {}),
  };
}
