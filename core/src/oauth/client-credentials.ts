import { GRANT_TYPE_CLIENT_CREDENTIALS, UnauthorizedClient, type AuthenticatedClient, type VerifiedIdentity } from '@tessera/plugin-sdk';
import type { ExchangePipeline, ExchangeTrace } from './exchange-pipeline.js';
import { readTargetsAndScope } from './parameters.js';
import type { TokenRequest } from './request.js';
import { tokenResponse, type TokenResponse } from './token-response.js';

/** The identity of a client acting for itself; policy matches it with `subjectTokenTypes: [this]`. */
export const TOKEN_TYPE_CLIENT = 'urn:tessera:token-type:client';

/** Upper bound for the lifetime of a client's own identity; policy's maxLifetimeSeconds is the real cap. */
const CLIENT_IDENTITY_HORIZON_MS = 86_400_000;

/** Client auth methods that prove a key: a shared secret is not a workload identity. */
const KEY_PROOF_METHODS = new Set(['private_key_jwt', 'spiffe_jwt']);

/**
 * RFC 6749 §4.4, restricted to clients that proved a key (a JWT assertion or a JWT-SVID):
 * secret-authenticated and public clients get `unauthorized_client`. A workload that authenticated with
 * a JWT-SVID is its own subject: its SPIFFE ID, trust domain and SVID expiry are what policy sees.
 */
export async function clientCredentials(
  request: TokenRequest,
  client: AuthenticatedClient,
  pipeline: ExchangePipeline,
  trace: ExchangeTrace,
  context: { readonly brokerIssuer: string; readonly now: Date },
): Promise<TokenResponse> {
  const { scopes, ...targets } = readTargetsAndScope(request, trace);
  if (!KEY_PROOF_METHODS.has(client.authMethod)) {
    throw new UnauthorizedClient('client_credentials requires JWT client authentication', { detail: `client_credentials with ${client.authMethod}` });
  }
  const proven = client.identity;
  const subject: VerifiedIdentity = proven
    ? { ...proven, tokenType: TOKEN_TYPE_CLIENT, attributes: { ...proven.attributes, client_id: client.id } }
    : {
        issuer: context.brokerIssuer,
        subject: client.id,
        audiences: [],
        expiresAt: new Date(context.now.getTime() + CLIENT_IDENTITY_HORIZON_MS),
        tokenType: TOKEN_TYPE_CLIENT,
        claims: {},
        attributes: { client_id: client.id },
      };
  trace.subject = subject;
  const { grant, issued } = await pipeline.exchange(
    { grantType: 'client_credentials', grantTypeUri: GRANT_TYPE_CLIENT_CREDENTIALS, endpoint: request.frontDoor, client, subject, ...targets, scopes },
    trace,
  );
  return tokenResponse(grant, issued, { exchange: false });
}
