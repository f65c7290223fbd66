import { GRANT_TYPE_TOKEN_EXCHANGE, InvalidRequest, type AuthenticatedClient } from '@tessera/plugin-sdk';
import type { ExchangePipeline, ExchangeTrace } from './exchange-pipeline.js';
import { readTargetsAndScope } from './parameters.js';
import type { TokenRequest } from './request.js';
import { tokenResponse, type TokenResponse } from './token-response.js';

/** RFC 8693 §2: token exchange. */
export async function tokenExchange(
  request: TokenRequest,
  client: AuthenticatedClient,
  pipeline: ExchangePipeline,
  trace: ExchangeTrace,
): Promise<TokenResponse> {
  const subjectToken = request.get('subject_token');
  const subjectTokenType = request.get('subject_token_type');
  const actorToken = request.get('actor_token');
  const actorTokenType = request.get('actor_token_type');
  const requestedTokenType = request.get('requested_token_type');
  const { scopes, ...targets } = readTargetsAndScope(request, trace, requestedTokenType);

  if (subjectToken === undefined || subjectTokenType === undefined) {
    throw new InvalidRequest('subject_token and subject_token_type are required', { detail: 'missing subject_token parameters' });
  }
  // RFC 8693 §2.1: actor_token_type is required with actor_token and must not be sent without it.
  if ((actorToken === undefined) !== (actorTokenType === undefined)) {
    throw new InvalidRequest('actor_token and actor_token_type must be sent together', { detail: 'actor parameters mismatch' });
  }

  // Tokens posted at the SPIFFE door must name the broker itself.
  const options = { brokerAudienceOnly: request.frontDoor === 'spiffe-exchange', client };
  trace.subject = await pipeline.validate(subjectToken, subjectTokenType, 'subject', options);
  if (actorToken !== undefined && actorTokenType !== undefined) {
    // Delegation: the actor's trust, may_act and the chain are checked by the pipeline, then by policy.
    trace.actor = await pipeline.validate(actorToken, actorTokenType, 'actor', options);
  }

  const { grant, issued } = await pipeline.exchange(
    {
      grantType: 'token_exchange',
      grantTypeUri: GRANT_TYPE_TOKEN_EXCHANGE,
      endpoint: request.frontDoor,
      client,
      subject: trace.subject,
      ...(trace.actor ? { actor: trace.actor } : {}),
      requestedTokenType,
      ...targets,
      scopes,
    },
    trace,
  );
  return tokenResponse(grant, issued, { exchange: true });
}
