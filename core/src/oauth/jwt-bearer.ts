import { GRANT_TYPE_JWT_BEARER, InvalidRequest, TOKEN_TYPE_JWT, type AuthenticatedClient } from '@tessera/plugin-sdk';
import type { ExchangePipeline, ExchangeTrace } from './exchange-pipeline.js';
import { readTargetsAndScope } from './parameters.js';
import type { TokenRequest } from './request.js';
import { tokenResponse, type TokenResponse } from './token-response.js';

/**
 * RFC 7523 §2.1: the assertion is verified by the validator registered for the JWT token type, exactly as
 * a subject token of that type would be; failures are `invalid_grant` (§3.1).
 */
export async function jwtBearer(request: TokenRequest, client: AuthenticatedClient, pipeline: ExchangePipeline, trace: ExchangeTrace): Promise<TokenResponse> {
  const assertion = request.get('assertion');
  const { scopes, ...targets } = readTargetsAndScope(request, trace);
  if (assertion === undefined) throw new InvalidRequest('assertion is required', { detail: 'missing assertion' });

  trace.subject = await pipeline.validate(assertion, TOKEN_TYPE_JWT, 'assertion');
  const { grant, issued } = await pipeline.exchange(
    { grantType: 'jwt_bearer', grantTypeUri: GRANT_TYPE_JWT_BEARER, endpoint: request.frontDoor, client, subject: trace.subject, ...targets, scopes },
    trace,
  );
  return tokenResponse(grant, issued, { exchange: false });
}
