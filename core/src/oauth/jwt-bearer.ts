import { GRANT_TYPE_JWT_BEARER, InvalidGrant, InvalidRequest, TOKEN_TYPE_JWT, type AuthenticatedClient } from '@tessera/plugin-sdk';
import type { ExchangePipeline, ExchangeTrace } from './exchange-pipeline.js';
import { readTargetsAndScope } from './parameters.js';
import type { TokenRequest } from './request.js';
import { tokenResponse, type TokenResponse } from './token-response.js';

const SUBJECT_TOKEN_UNACCEPTABLE = InvalidRequest.subjectToken().description;

/**
 * RFC 7523 §2.1: the assertion is verified by the validator registered for the JWT token type, exactly as
 * a subject token of that type would be; failures are `invalid_grant` (§3.1).
 */
export async function jwtBearer(request: TokenRequest, client: AuthenticatedClient, pipeline: ExchangePipeline, trace: ExchangeTrace): Promise<TokenResponse> {
  const assertion = request.get('assertion');
  const { scopes, ...targets } = readTargetsAndScope(request, trace);
  if (assertion === undefined) throw new InvalidRequest('assertion is required', { detail: 'missing assertion' });

  trace.subject = await pipeline.validate(assertion, TOKEN_TYPE_JWT, 'assertion');
  try {
    const { grant, issued } = await pipeline.exchange(
      { grantType: 'jwt_bearer', grantTypeUri: GRANT_TYPE_JWT_BEARER, endpoint: request.frontDoor, client, subject: trace.subject, ...targets, scopes },
      trace,
    );
    return tokenResponse(grant, issued, { exchange: false });
  } catch (error) {
    // There is no subject_token here: what would be unacceptable about one is the assertion (§3.1).
    if (error instanceof InvalidRequest && error.description === SUBJECT_TOKEN_UNACCEPTABLE) throw new InvalidGrant(undefined, { detail: error.detail });
    throw error;
  }
}
