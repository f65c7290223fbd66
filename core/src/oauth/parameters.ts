import { InvalidScope, InvalidTarget } from '@tessera/plugin-sdk';
import type { ExchangeTrace } from './exchange-pipeline.js';
import type { TokenRequest } from './request.js';
import { isAbsoluteUriWithoutFragment, isSafeAudience, isScopeToken } from './target-values.js';

/** Longer audience/resource values are refused before any policy matching. */
const MAX_TARGET_LENGTH = 2_048;

/** Undefined when no `scope` was sent (policy defaults apply); otherwise the distinct scope tokens. */
function parseScope(request: TokenRequest): string[] | undefined {
  const raw = request.get('scope');
  if (raw === undefined) return undefined;
  const scopes = raw.split(' ').filter((scope) => scope !== '');
  if (!scopes.every(isScopeToken)) throw new InvalidScope('scope is malformed', { detail: 'scope syntax' });
  return [...new Set(scopes)];
}

/**
 * RFC 8693 §2.1: `resource` is an absolute URI without fragment; `audience` is any string, but only a safe
 * one (see `isSafeAudience`). Both may repeat. Refused here, before any policy matching.
 */
function parseTargets(request: TokenRequest): { audiences: string[]; resources: string[] } {
  const audiences = [...request.getAll('audience')];
  const resources = [...request.getAll('resource')];
  if ([...audiences, ...resources].some((target) => target.length > MAX_TARGET_LENGTH)) {
    throw new InvalidTarget('audience or resource is too long', { detail: 'target length' });
  }
  if (!resources.every(isAbsoluteUriWithoutFragment)) {
    throw new InvalidTarget('resource must be an absolute URI without fragment', { detail: 'resource syntax' });
  }
  if (!audiences.every(isSafeAudience)) {
    throw new InvalidTarget('audience holds characters that are not allowed', { detail: 'audience syntax' });
  }
  return { audiences, resources };
}

/** Targets and scope of any grant, recorded in the trace before anything can refuse the request. */
export function readTargetsAndScope(request: TokenRequest, trace: ExchangeTrace, tokenType?: string) {
  const targets = parseTargets(request);
  const scopes = parseScope(request);
  trace.requested = { ...(tokenType !== undefined ? { tokenType } : {}), ...targets, ...(scopes ? { scopes } : {}) };
  return { ...targets, scopes };
}
