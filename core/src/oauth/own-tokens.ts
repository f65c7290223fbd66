import { errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import { InvalidClient, isCompactJws, type AuthenticatedClient, type BrokerInfo, type Clock, type KeyRing, type Logger, type OAuthError } from '@tessera/plugin-sdk';
import type { RevocationAuditRecord } from '../audit/audit-log.js';
import type { ClientAuthenticator } from './client-auth.js';
import type { TokenRequest } from './request.js';

/** RFC 9068 §2.1: the `typ` of the access tokens this broker issues. */
export const ACCESS_TOKEN_TYP = 'at+jwt';

/** RFC 7009 §2.1 / §4.1.2 registered `token_type_hint` values (recorded in audits; others are ignored). */
export const TOKEN_TYPE_HINTS: ReadonlySet<string> = new Set(['access_token', 'refresh_token']);

/** What became of one request about a broker token (revocation, introspection), for its audit record. */
export interface OwnTokenTrace {
  client?: AuthenticatedClient;
  /** Why the token was left alone or reported inactive: never sent to the client. */
  reason?: string;
  /** `jti` of the broker token the request named, once its signature verified. */
  jti?: string;
  /** `token_type_hint`, when it is one of the registered values. */
  tokenTypeHint?: string;
}

/** The members the audit records of revocation and introspection share. */
export type OwnTokenRecordFields = Pick<RevocationAuditRecord, 'decision' | 'requestId' | 'error' | 'reason' | 'client' | 'jti' | 'tokenTypeHint' | 'latencyMs'>;

/** Those members from a trace: the error's detail wins over the trace's reason. */
export function ownTokenRecordFields(requestId: string, started: number, trace: OwnTokenTrace, error?: OAuthError): OwnTokenRecordFields {
  const reason = error?.detail ?? trace.reason;
  return {
    decision: error ? 'deny' : 'allow',
    requestId,
    ...(error ? { error: error.code } : {}),
    ...(reason ? { reason } : {}),
    ...(trace.client ? { client: { id: trace.client.id, authMethod: trace.client.authMethod } } : {}),
    ...(trace.jti ? { jti: trace.jti } : {}),
    ...(trace.tokenTypeHint ? { tokenTypeHint: trace.tokenTypeHint } : {}),
    latencyMs: Math.round((performance.now() - started) * 100) / 100,
  };
}

export interface OwnTokenDeps {
  readonly keyRing: KeyRing;
  readonly broker: BrokerInfo;
  readonly clock: Clock;
  readonly log: Logger;
  /** Tokens longer than this cannot be ones the broker issued (the ceiling of `limits.maxIssuedTokenBytes`). */
  readonly maxTokenBytes: number;
}

export interface OwnTokenCheck {
  readonly requiredClaims: readonly string[];
  /** Tolerance past `exp` (default none). */
  readonly clockToleranceSeconds?: number;
  /** Names the endpoint in the log line for an unexpected verification error. */
  readonly endpoint: string;
}

/**
 * The verified claims when `token` is an access token this broker issued (its keys, its exact issuer,
 * `typ` at+jwt, the required claims, unexpired within the tolerance); otherwise why it is not, as a fixed
 * reason for the audit record. Shared by revocation and introspection; client input never makes it throw.
 */
export async function verifyOwnAccessToken(token: string, deps: OwnTokenDeps, check: OwnTokenCheck): Promise<{ payload?: JWTPayload; reason?: string }> {
  if (token.length > deps.maxTokenBytes || !isCompactJws(token)) return { reason: 'not a token of this broker (format)' };
  try {
    const { payload } = await jwtVerify(token, deps.keyRing.verifier(), {
      issuer: deps.broker.issuer,
      typ: ACCESS_TOKEN_TYP,
      algorithms: [...deps.keyRing.algorithms],
      ...(check.clockToleranceSeconds ? { clockTolerance: check.clockToleranceSeconds } : {}),
      currentDate: deps.clock.now(),
      requiredClaims: [...check.requiredClaims],
    });
    return { payload };
  } catch (error) {
    if (error instanceof joseErrors.JWTExpired) return { reason: 'expired' };
    if (error instanceof joseErrors.JOSEError) return { reason: `not a token of this broker (${error.code})` };
    // Whatever jose choked on, it is not a token we could have issued.
    deps.log.warn({ errName: error instanceof Error ? error.name : typeof error }, `${check.endpoint}: unexpected verification error`);
    return { reason: 'not a token of this broker (unverifiable)' };
  }
}

/**
 * The client of a revocation or introspection request, which must authenticate: a public client proves
 * nothing but a client_id, and every token names its client_id, so anyone holding (or having seen) a
 * token could ask as it. `onClient` records it before the public-client refusal, for the audit record.
 */
export async function authenticateConfidential(
  authenticator: ClientAuthenticator,
  request: TokenRequest,
  endpoint: 'revocation' | 'introspection',
  onClient: (client: AuthenticatedClient) => void,
): Promise<AuthenticatedClient> {
  const client = await authenticator.authenticate(request);
  onClient(client);
  if (client.authMethod === 'none') throw new InvalidClient('client authentication required', { detail: `${endpoint}: public clients may not ${endpoint === 'revocation' ? 'revoke' : 'introspect'}` });
  return client;
}
