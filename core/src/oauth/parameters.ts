import { InvalidScope, InvalidTarget } from '@tessera/plugin-sdk';
import type { ExchangeTrace } from './exchange-pipeline.js';
import type { TokenRequest } from './request.js';

/** Longer audience/resource values are refused before any policy matching. */
const MAX_TARGET_LENGTH = 2_048;

// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

/** Undefined when no `scope` was sent (policy defaults apply); otherwise the distinct scope tokens. */
function parseScope(request: TokenRequest): string[] | undefined {
  const raw = request.get('scope');
  if (raw === undefined) return undefined;
  const scopes = raw.split(' ').filter((scope) => scope !== '');
  if (!scopes.every((scope) => SCOPE_TOKEN.test(scope))) throw new InvalidScope('scope is malformed', { detail: 'scope syntax' });
  return [...new Set(scopes)];
}

/** RFC 8693 §2.1: `resource` is an absolute URI without fragment; `audience` is any string. Both may repeat. */
function parseTargets(request: TokenRequest): { audiences: string[]; resources: string[] } {
  const audiences = [...request.getAll('audience')];
  const resources = [...request.getAll('resource')];
  if ([...audiences, ...resources].some((target) => target.length > MAX_TARGET_LENGTH)) {
    throw new InvalidTarget('audience or resource is too long', { detail: 'target length' });
  }
  for (const resource of resources) {
    if (!URL.canParse(resource) || new URL(resource).hash !== '' || resource.includes('#')) {
      throw new InvalidTarget('resource must be an absolute URI without fragment', { detail: 'resource syntax' });
    }
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
