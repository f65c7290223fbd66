/**
 * SPIFFE Workload API client (SPIFFE_Workload_API.md), service `SpiffeWorkloadAPI`.
 */
import { parseEndpointAddress } from './address.js';
import { WorkloadApiError } from './errors.js';
import { GrpcEndpoint, type ClientOptions, type WatchErrorHandler, type Watcher } from './grpc-endpoint.js';
import { serviceDefinitions } from './proto.js';
import {
  checkAudiences,
  checkSpiffeId,
  derList,
  responseSpiffeId,
  svidTimes,
  trustDomainFromId,
  watchBundles,
  withHint,
  type JwtBundlesHandler,
} from './rpc-data.js';
import { structToJson } from './struct.js';

/** A JWT-SVID fetched from the agent. */
export interface JwtSvid {
  /** The SVID's SPIFFE ID (validated). */
  readonly spiffeId: string;
  /** Compact JWS. A bearer credential: never log it. */
  readonly token: string;
  /** From the token's `exp`. */
  readonly expiresAt: Date;
  /** Operator hint to tell several SVIDs apart, when set. No security meaning. */
  readonly hint?: string;
}

/** A JWT-SVID the agent validated. */
export interface ValidatedJwtSvid {
  readonly spiffeId: string;
  /** The token's claims as JSON. */
  readonly claims: Record<string, unknown>;
}

/** One X.509-SVID with its key. */
export interface X509Svid {
  readonly spiffeId: string;
  /** DER certificates, leaf first. */
  readonly certChainDer: readonly Buffer[];
  /** Unencrypted PKCS#8 DER private key. */
  readonly keyPkcs8Der: Buffer;
  /** DER CA certificates of the SVID's own trust domain. */
  readonly bundleDer: readonly Buffer[];
  readonly hint?: string;
}

/** The first `FetchX509SVID` message. */
export interface X509Context {
  readonly svids: readonly X509Svid[];
  /** DER CA certificates of federated trust domains, keyed by trust domain name. */
  readonly federatedBundles: ReadonlyMap<string, readonly Buffer[]>;
}

interface JwtSvidMessage {
  spiffe_id: string;
  svid: string;
  hint: string;
}
interface X509SvidMessage {
  spiffe_id: string;
  x509_svid: Buffer;
  x509_svid_key: Buffer;
  bundle: Buffer;
  hint: string;
}

interface X509SvidResponse {
  svids: X509SvidMessage[];
  federated_bundles: Record<string, Buffer>;
}

function x509Context(response: X509SvidResponse): X509Context {
  const rpc = 'FetchX509SVID';
  const svids = response.svids.map((svid) => {
    const spiffeId = responseSpiffeId(svid.spiffe_id, rpc);
    const certChainDer = derList(svid.x509_svid, rpc);
    if (certChainDer.length === 0) throw new WorkloadApiError('invalid_response', rpc, { detail: 'X.509-SVID has no certificate' });
    if (svid.x509_svid_key.length === 0) throw new WorkloadApiError('invalid_response', rpc, { detail: 'X.509-SVID has no private key' });
    return withHint({ spiffeId, certChainDer, keyPkcs8Der: svid.x509_svid_key, bundleDer: derList(svid.bundle, rpc) }, svid.hint);
  });
  const federatedBundles = new Map<string, Buffer[]>();
  for (const [key, der] of Object.entries(response.federated_bundles)) {
    federatedBundles.set(trustDomainFromId(key, rpc), derList(der, rpc));
  }
  return { svids, federatedBundles };
}

/**
 * Talks to a SPIFFE Workload API endpoint (e.g. the SPIRE agent's public socket). Every call
 * carries `workload.spiffe.io: true`. The channel is opened lazily; call {@link close} when done.
 */
export class WorkloadApiClient {
  private readonly endpoint: GrpcEndpoint;

  /**
   * @param address `unix:///path` or `tcp://ip:port`; defaults to `$SPIFFE_ENDPOINT_SOCKET`.
   *   Throws {@link AddressError} when neither is usable.
   */
  constructor(address?: string, options: ClientOptions = {}) {
    this.endpoint = new GrpcEndpoint(parseEndpointAddress(address), serviceDefinitions().workload, 'workload', options);
  }

  /**
   * Fetches JWT-SVIDs for `audience`: one per identity of the caller, or only `spiffeId`'s.
   * Throws {@link WorkloadApiError}.
   */
  async fetchJwtSvid(request: { audience: readonly string[]; spiffeId?: string; signal?: AbortSignal }): Promise<JwtSvid[]> {
    const rpc = 'FetchJWTSVID';
    checkAudiences(request.audience, rpc);
    if (request.spiffeId !== undefined) checkSpiffeId(request.spiffeId, rpc);
    const response = await this.endpoint.unary<{ svids: JwtSvidMessage[] }>(
      rpc,
      { audience: [...request.audience], spiffe_id: request.spiffeId ?? '' },
      request.signal,
    );
    return response.svids.map((svid) => {
      const spiffeId = responseSpiffeId(svid.spiffe_id, rpc);
      const { expiresAt } = svidTimes(svid.svid, spiffeId, rpc);
      return withHint({ spiffeId, token: svid.svid, expiresAt }, svid.hint);
    });
  }

  /**
   * Asks the agent to validate a JWT-SVID for one audience. Throws {@link WorkloadApiError}
   * (`invalid_argument` when the agent rejects the token).
   */
  async validateJwtSvid(token: string, audience: string, options: { signal?: AbortSignal } = {}): Promise<ValidatedJwtSvid> {
    const rpc = 'ValidateJWTSVID';
    if (typeof token !== 'string' || token === '') throw new WorkloadApiError('invalid_argument', rpc, { detail: 'token is empty' });
    if (typeof audience !== 'string' || audience === '') throw new WorkloadApiError('invalid_argument', rpc, { detail: 'audience is empty' });
    const response = await this.endpoint.unary<{ spiffe_id: string; claims: unknown }>(rpc, { audience, svid: token }, options.signal);
    const spiffeId = responseSpiffeId(response.spiffe_id, rpc);
    try {
      return { spiffeId, claims: structToJson(response.claims as Parameters<typeof structToJson>[0]) };
    } catch {
      throw new WorkloadApiError('invalid_response', rpc, { detail: 'claims nest too deep' });
    }
  }

  /** Returns the first `FetchX509SVID` message (then closes that stream). Throws {@link WorkloadApiError}. */
  async fetchX509Svid(options: { signal?: AbortSignal } = {}): Promise<X509Context> {
    return x509Context(await this.endpoint.firstMessage<X509SvidResponse>('FetchX509SVID', {}, options.signal));
  }

  /**
   * Streams `FetchX509SVID`: `onUpdate` gets the full context on every message, i.e. whenever the agent
   * rotates an SVID or a bundle changes. A malformed message is skipped (the last good context stands) and
   * reported to `onError` with `next: 'continue'`. The stream is reopened with backoff when it ends or
   * fails (e.g. PermissionDenied while the workload has no identity), except after InvalidArgument.
   */
  watchX509Svids(onUpdate: (context: X509Context) => void, onError?: WatchErrorHandler): Watcher {
    return this.endpoint.watch<X509SvidResponse>('FetchX509SVID', {}, (message) => onUpdate(x509Context(message)), onError);
  }

  /**
   * Streams the JWT bundles (`FetchJWTBundles`). `onUpdate` gets the full set on every message; a
   * refused bundle is left out (fail closed) and reported to `onError` with `next: 'continue'`.
   * The stream is reopened with backoff when it ends or fails, except after InvalidArgument.
   */
  watchJwtBundles(onUpdate: JwtBundlesHandler, onError?: WatchErrorHandler): Watcher {
    return watchBundles(this.endpoint, 'FetchJWTBundles', onUpdate, onError);
  }

  /** Closes the channel and every watch. Calls afterwards fail with `closed`. */
  close(): void {
    this.endpoint.close();
  }
}
