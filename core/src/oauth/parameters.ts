import { InvalidScope, InvalidTarget } from '@tessera/plugin-sdk';
import type { ExchangeTrace } from './exchange-pipeline.js';
import type { TokenRequest } from './request.js';
import { isAbsoluteUriWithoutFragment, isSafeAudience, isScopeToken } from './target-values.js';

/** Longer audience/resource values are refused before any policy matching. */
const MAX_TARGET_LENGTH = 2_048;

export interface TargetsAndScope {
  readonly audiences: string[];
  readonly resources: string[];
  /** Undefined when no `scope` was sent (policy defaults apply); otherwise the distinct scope tokens. */
  readonly scopes: string[] | undefined;
}

/**
 * RFC 8693 §2.1: `resource` is an absolute URI without fragment; `audience` is any string, but only a safe
 * one (see `isSafeAudience`). Both may repeat. RFC 6749 §3.3 scope tokens. Refused here, before any policy
 * matching, by the token endpoint and `policy explain` alike.
 */
export function checkTargetsAndScope(audiences: readonly string[], resources: readonly string[], scope: string | undefined): TargetsAndScope {
  if ([...audiences, ...resources].some((target) => target.length > MAX_TARGET_LENGTH)) {
    throw new InvalidTarget('audience or resource is too long', { detail: 'target length' });
  }
  if (!resources.every(isAbsoluteUriWithoutFragment)) {
    throw new InvalidTarget('resource must be an absolute URI without fragment', { detail: 'resource syntax' });
  }
  if (!audiences.every(isSafeAudience)) {
    throw new InvalidTarget('audience holds characters that are not allowed', { detail: 'audience syntax' });
  }
  let scopes: string[] | undefined;
  if (scope !== undefined) {
    const tokens = scope.split(' ').filter((token) => token !== '');
    if (!tokens.every(isScopeToken)) throw new InvalidScope('scope is malformed', { detail: 'scope syntax' });
    scopes = [...new Set(tokens)];
  }
  return { audiences: [...audiences], resources: [...resources], scopes };
}

/** Targets and scope of any grant, recorded in the trace before anything can refuse the request. */
export function readTargetsAndScope(request: TokenRequest, trace: ExchangeTrace, tokenType?: string): TargetsAndScope {
  const { audiences, resources, scopes } = checkTargetsAndScope(request.getAll('audience'), request.getAll('resource'), request.get('scope'));
  trace.requested = { ...(tokenType !== undefined ? { tokenType } : {}), audiences, resources, ...(scopes ? { scopes } : {}) };
  return { audiences, resources, scopes };
}
