/**
 * Checks on what the clients send to and take from an agent, shared by the Workload API and
 * Delegated Identity clients. Errors name the rule, never the value.
 */
import { parseJwtBundleMap } from './bundle.js';
import { splitDerSequences } from './der.js';
import { WorkloadApiError } from './errors.js';
import type { GrpcEndpoint, WatchErrorHandler, Watcher } from './grpc-endpoint.js';
import { jwtSvidTimes, MalformedSvid } from './jwt-svid.js';
import { parseSpiffeId } from './spiffe-id.js';
import type { JwtBundle } from './bundle.js';

/** Receives the complete set of JWT bundles, keyed by trust domain name, on every change. */
export type JwtBundlesHandler = (bundles: Map<string, JwtBundle>) => void;

/** Both APIs stream `map<string, bytes>` of plain JWKS keyed by trust-domain ID. */
export function watchBundles(endpoint: GrpcEndpoint, rpc: string, onUpdate: JwtBundlesHandler, onError?: WatchErrorHandler): Watcher {
  return endpoint.watch<{ bundles: Record<string, Buffer> }>(
    rpc,
    {},
    (message) => {
      const { bundles, refused } = parseJwtBundleMap(message.bundles);
      onUpdate(bundles);
      return refused.map(
        (entry) =>
          new WorkloadApiError('invalid_response', rpc, {
            detail: `bundle${entry.trustDomain === undefined ? '' : ` of ${entry.trustDomain}`} refused (${entry.reason})`,
          }),
      );
    },
    onError,
  );
}

export function checkAudiences(audience: readonly string[], rpc: string): void {
  if (!Array.isArray(audience) || audience.length === 0 || audience.some((value) => typeof value !== 'string' || value === '')) {
    throw new WorkloadApiError('invalid_argument', rpc, { detail: 'audience must be a non-empty list of non-empty strings' });
  }
}

export function svidTimes(token: string, spiffeId: string, rpc: string): { expiresAt: Date; issuedAt?: Date } {
  try {
    return jwtSvidTimes(token, spiffeId);
  } catch (error) {
    throw new WorkloadApiError('invalid_response', rpc, { detail: error instanceof MalformedSvid ? error.message : 'bad JWT-SVID' });
  }
}

export function withHint<T extends object>(value: T, hint: string): T & { hint?: string } {
  return hint === '' ? value : { ...value, hint };
}

export function checkSpiffeId(spiffeId: string, rpc: string): void {
  try {
    parseSpiffeId(spiffeId);
  } catch {
    throw new WorkloadApiError('invalid_argument', rpc, { detail: 'spiffeId is not a SPIFFE ID' });
  }
}

export function responseSpiffeId(text: string, rpc: string): string {
  try {
    return parseSpiffeId(text).toString();
  } catch {
    throw new WorkloadApiError('invalid_response', rpc, { detail: 'response carries an invalid SPIFFE ID' });
  }
}

export function trustDomainFromId(text: string, rpc: string): string {
  try {
    const id = parseSpiffeId(text);
    if (id.path === '') return id.trustDomain;
  } catch {
    // Reported below without echoing the key.
  }
  throw new WorkloadApiError('invalid_response', rpc, { detail: 'bundle map key is not a trust-domain ID' });
}

export function derList(bytes: Buffer, rpc: string): Buffer[] {
  try {
    return splitDerSequences(bytes);
  } catch {
    throw new WorkloadApiError('invalid_response', rpc, { detail: 'malformed DER certificates' });
  }
}
