/**
 * SPIRE agent Delegated Identity API (admin socket), service
 * `spire.api.agent.delegatedidentity.v1.DelegatedIdentity`: JWT-SVIDs for *other* workloads,
 * named by selectors. The caller must be listed in the agent's `authorized_delegates`; it can
 * then impersonate any workload the agent serves, so the admin socket must be protected.
 */
import { AddressError, parseEndpointAddress } from './address.js';
import { WorkloadApiError } from './errors.js';
import { GrpcEndpoint, type ClientOptions, type WatchErrorHandler, type Watcher } from './grpc-endpoint.js';
import { serviceDefinitions } from './proto.js';
import { checkAudiences, responseSpiffeId, svidTimes, watchBundles, withHint, type JwtBundlesHandler } from './rpc-data.js';

/** A SPIRE selector, e.g. `{ type: 'unix', value: 'uid:1000' }`. */
export interface Selector {
  readonly type: string;
  readonly value: string;
}

/** Why a selector string was refused. */
export type SelectorErrorReason = 'missing_colon' | 'empty_type' | 'empty_value';

/** A selector string was refused. The message never contains the input. */
export class SelectorError extends Error {
  override readonly name = 'SelectorError';
  constructor(readonly reason: SelectorErrorReason) {
    super(
      reason === 'missing_colon'
        ? 'selector must have the form type:value'
        : reason === 'empty_type'
          ? 'selector type is empty'
          : 'selector value is empty',
    );
  }
}

/**
 * Parses SPIRE's `type:value` form, split at the first colon: `unix:uid:1000` →
 * `{ type: 'unix', value: 'uid:1000' }`. Throws {@link SelectorError}.
 */
export function parseSelector(text: string): Selector {
  const colon = typeof text === 'string' ? text.indexOf(':') : -1;
  if (colon === -1) throw new SelectorError('missing_colon');
  const type = text.slice(0, colon);
  const value = text.slice(colon + 1);
  if (type === '') throw new SelectorError('empty_type');
  if (value === '') throw new SelectorError('empty_value');
  return { type, value };
}

/** A JWT-SVID minted for a delegated workload. */
export interface DelegatedJwtSvid {
  /** The SVID's SPIFFE ID (validated). */
  readonly spiffeId: string;
  /** Compact JWS. A bearer credential: never log it. */
  readonly token: string;
  readonly expiresAt: Date;
  readonly issuedAt: Date;
  readonly hint?: string;
}

interface JwtSvidMessage {
  token: string;
  id: { trust_domain: string; path: string } | null;
  expires_at: number;
  issued_at: number;
  hint: string;
}

/** Talks to a SPIRE agent's admin socket. Call {@link close} when done. */
export class DelegatedIdentityClient {
  private readonly endpoint: GrpcEndpoint;

  /**
   * @param address the admin socket, `unix:///path` (or `tcp://ip:port`). Required: unlike the
   *   Workload API there is no environment fallback, since `SPIFFE_ENDPOINT_SOCKET` names the
   *   public socket. Throws {@link AddressError}.
   */
  constructor(address: string, options: ClientOptions = {}) {
    if (typeof address !== 'string' || address === '') throw new AddressError('missing');
    this.endpoint = new GrpcEndpoint(parseEndpointAddress(address), serviceDefinitions().delegated, 'delegated', options);
  }

  /**
   * Mints JWT-SVIDs for the workload the selectors describe: one per matching registration entry.
   * Selectors are taken as already attested, so they must come from a trusted source.
   * Either `selectors` (already attested by the caller) or `pid` (the agent attests that process itself),
   * never both: SPIRE refuses that.
   * Throws {@link WorkloadApiError}: `no_identity` when no entry matches,
   * `not_authorized_delegate` when this process is not an authorized delegate.
   */
  async fetchJwtSvids(request: { audience: readonly string[]; selectors?: readonly Selector[]; pid?: number; signal?: AbortSignal }): Promise<DelegatedJwtSvid[]> {
    const rpc = 'FetchJWTSVIDs';
    checkAudiences(request.audience, rpc);
    const byPid = request.pid !== undefined;
    if (byPid && (!Number.isInteger(request.pid) || request.pid! <= 0 || request.selectors !== undefined)) {
      throw new WorkloadApiError('invalid_argument', rpc, { detail: 'give either selectors or a positive pid' });
    }
    const selectors = byPid ? [] : checkSelectors(request.selectors ?? [], rpc);
    const response = await this.endpoint.unary<{ svids: JwtSvidMessage[] }>(rpc, { audience: [...request.audience], selectors, pid: byPid ? request.pid : 0 }, request.signal);
    return response.svids.map((svid) => {
      if (svid.id === null) throw new WorkloadApiError('invalid_response', rpc, { detail: 'JWT-SVID has no id' });
      const spiffeId = responseSpiffeId(`spiffe://${svid.id.trust_domain}${svid.id.path}`, rpc);
      const fromToken = svidTimes(svid.token, spiffeId, rpc);
      // The response's own times win; the token's are the fallback for an agent that leaves them 0.
      const expiresAt = svid.expires_at > 0 ? new Date(svid.expires_at * 1000) : fromToken.expiresAt;
      const issuedAt = svid.issued_at > 0 ? new Date(svid.issued_at * 1000) : fromToken.issuedAt;
      if (issuedAt === undefined) throw new WorkloadApiError('invalid_response', rpc, { detail: 'JWT-SVID has no issue time' });
      return withHint({ spiffeId, token: svid.token, expiresAt, issuedAt }, svid.hint);
    });
  }

  /**
   * Streams the JWT bundles (`SubscribeToJWTBundles`), like {@link WorkloadApiClient.watchJwtBundles}:
   * full state per message keyed by trust domain name, refused bundles left out and reported,
   * reconnect with backoff except after InvalidArgument.
   */
  subscribeToJwtBundles(onUpdate: JwtBundlesHandler, onError?: WatchErrorHandler): Watcher {
    return watchBundles(this.endpoint, 'SubscribeToJWTBundles', onUpdate, onError);
  }

  /** Closes the channel and every subscription. */
  close(): void {
    this.endpoint.close();
  }
}

function checkSelectors(selectors: readonly Selector[], rpc: string): Selector[] {
  // SPIRE wants selectors or a PID: without a PID, an empty list is always refused.
  if (!Array.isArray(selectors) || selectors.length === 0) {
    throw new WorkloadApiError('invalid_argument', rpc, { detail: 'selectors must be a non-empty list' });
  }
  return selectors.map((selector: unknown) => {
    const { type, value } = (selector ?? {}) as Partial<Selector>;
    // A colon in the type would make the selector's `type:value` form ambiguous.
    if (typeof type !== 'string' || type === '' || type.includes(':')) {
      throw new WorkloadApiError('invalid_argument', rpc, { detail: 'selector type must be non-empty and contain no colon' });
    }
    if (typeof value !== 'string' || value === '') throw new WorkloadApiError('invalid_argument', rpc, { detail: 'selector value is empty' });
    return { type, value };
  });
}
