import { decodeJwt } from 'jose';
import { GRANT_TYPE_TOKEN_EXCHANGE, InvalidRequest, ServerError, TOKEN_TYPE_JWT_SVID } from '@tessera/plugin-sdk';
import type { BrokerConfig } from '../config/schema.js';
import type { TokenResponse } from '../oauth/token-response.js';

/** Body members of the SPIFFE exchange door besides `token` and `audience`: optional, same names as RFC 8693 / RFC 7523. */
const PASSED_THROUGH = ['subject_token_type', 'client_id', 'client_secret', 'client_assertion', 'client_assertion_type'];
const KNOWN = new Set(['token', 'audience', ...PASSED_THROUGH]);

/**
 * `{ "token": "<JWT>", "audience": ["..."] }` becomes a token exchange for a JWT-SVID, so this door runs
 * the same client authentication, validators, policy, issuer and audit as `/token`.
 */
export function spiffeExchangeParameters(
  body: ReadonlyMap<string, string[]>,
  door: BrokerConfig['endpoints']['spiffeExchange'],
  hasAuthorizationHeader: boolean,
): Map<string, string[]> {
  // Anything else (an actor_token, a scope) would be dropped silently: refuse it instead.
  const unknown = [...body.keys()].find((name) => !KNOWN.has(name));
  if (unknown !== undefined) throw new InvalidRequest('unsupported member in the request body', { detail: `spiffe exchange: member ${unknown.slice(0, 64)}` });
  const parameters = new Map<string, string[]>([
    ['grant_type', [GRANT_TYPE_TOKEN_EXCHANGE]],
    ['requested_token_type', [TOKEN_TYPE_JWT_SVID]],
    ['subject_token_type', [door.subjectTokenType]],
  ]);
  const token = body.get('token');
  if (token) parameters.set('subject_token', token);
  const audience = body.get('audience');
  if (audience) parameters.set('audience', audience);
  for (const name of PASSED_THROUGH) {
    const value = body.get(name);
    if (value) parameters.set(name, value);
  }
  const presentsCredentials = hasAuthorizationHeader || ['client_id', 'client_secret', 'client_assertion', 'client_assertion_type'].some((name) => body.has(name));
  if (!presentsCredentials && door.publicClient !== undefined) parameters.set('client_id', [door.publicClient]);
  return parameters;
}

/** `{ jwt_svid, spiffe_id, expires_at }`, read from the SVID the issuer returned. */
export function spiffeExchangeResponse(response: TokenResponse): object {
  let claims: ReturnType<typeof decodeJwt>;
  try {
    claims = decodeJwt(response.access_token);
  } catch {
    throw new ServerError(undefined, { detail: 'spiffe exchange: issued token is not a JWT' });
  }
  if (typeof claims.sub !== 'string' || typeof claims.exp !== 'number') throw new ServerError(undefined, { detail: 'spiffe exchange: issued token lacks sub or exp' });
  return { jwt_svid: response.access_token, spiffe_id: claims.sub, expires_at: claims.exp };
}
