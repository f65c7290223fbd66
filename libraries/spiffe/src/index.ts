/**
 * @tessera/spiffe: SPIFFE IDs, SPIFFE bundles, and gRPC clients for the SPIFFE Workload API
 * and the SPIRE agent's Delegated Identity API.
 */
export { isSpiffeId, parseSpiffeId, parseTrustDomain, SpiffeIdError, trustDomainId, type SpiffeId, type SpiffeIdErrorReason } from './spiffe-id.js';
export {
  BundleError,
  MAX_BUNDLE_BYTES,
  parseJwtBundle,
  parseJwtBundleMap,
  parseSpiffeBundle,
  type BundleErrorReason,
  type JwtBundle,
  type RefusedBundle,
  type SpiffeBundle,
} from './bundle.js';
export { AddressError, parseEndpointAddress, SPIFFE_ENDPOINT_SOCKET, type AddressErrorReason } from './address.js';
export { WorkloadApiError, type WorkloadApiErrorCode } from './errors.js';
export type { ClientOptions, WatchErrorHandler, WatchErrorInfo, Watcher } from './grpc-endpoint.js';
export type { JwtBundlesHandler } from './rpc-data.js';
export { WorkloadApiClient, type JwtSvid, type ValidatedJwtSvid, type X509Context, type X509Svid } from './workload-api.js';
export {
  DelegatedIdentityClient,
  parseSelector,
  SelectorError,
  type DelegatedJwtSvid,
  type Selector,
  type SelectorErrorReason,
} from './delegated-identity.js';
