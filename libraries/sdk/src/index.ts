import { createRequire } from 'node:module';
export type {
  ActClaim,
  ActorTrust,
  AttributeExtractor,
  AuthenticatedClient,
  ClientAssertionVerifier,
  ClientAuthMethod,
  Grant,
  IdentityAttributes,
  IssueContext,
  IssuedToken,
  SubjectValidator,
  TokenIssuer,
  TokenTypeUrn,
  ValidationCaching,
  ValidationContext,
  ValidationRole,
  VerifiedIdentity,
} from './contracts.js';
export {
  InvalidClient,
  InvalidGrant,
  InvalidRequest,
  InvalidScope,
  InvalidTarget,
  InvalidToken,
  OAuthError,
  ServerError,
  TemporarilyUnavailable,
  UnauthorizedClient,
  UnsupportedGrantType,
} from './errors.js';
export type { OAuthErrorCode, OAuthErrorOptions, TokenRejection } from './errors.js';
export { UpstreamError } from './services.js';
export type {
  BrokerInfo,
  Clock,
  Counter,
  FetchJsonOptions,
  Histogram,
  HttpFetcher,
  JwksCache,
  KeyRing,
  Logger,
  MetricLabels,
  Metrics,
  ReplayStore,
  RevocationList,
  SignedToken,
} from './services.js';
export { token, tokens } from './tokens.js';
export type { Token, TokenValue } from './tokens.js';
export { definePlugin, isPluginDefinition } from './define-plugin.js';
export { decodeUnverifiedJwt, isCompactJws } from './compact-jws.js';
export { acceptedUntil } from './acceptance.js';
export { hasDuplicateMembers } from './json-members.js';
export type { UnverifiedJwt } from './compact-jws.js';
export type { PluginDefinition, PluginDeps, PluginInitArgs, PluginProvides, PluginPurpose, ResolvedDeps } from './define-plugin.js';
export {
  CLIENT_ASSERTION_TYPE_JWT_BEARER,
  CLIENT_ASSERTION_TYPE_JWT_SPIFFE,
  GRANT_TYPE_CLIENT_CREDENTIALS,
  GRANT_TYPE_JWT_BEARER,
  GRANT_TYPE_TOKEN_EXCHANGE,
  TOKEN_TYPE_ACCESS_TOKEN,
  TOKEN_TYPE_ID_TOKEN,
  TOKEN_TYPE_JWT,
  TOKEN_TYPE_JWT_SVID,
  TOKEN_TYPE_REFRESH_TOKEN,
  TOKEN_TYPE_STARFLY_SPIFFE_SVID,
} from './token-types.js';
/**
 * Version of the plugin API this SDK describes; plugins declare a range over it. 1.4: `init` learns its
 * `purpose`. 1.5: validators may let core reuse verified identities (`SubjectValidator.caching`).
 */
export const PLUGIN_API_VERSION = '1.5.0';
/** This package's own version: the broker checks a plugin's declared SDK range against it. */
export const SDK_VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version;
export { ASYMMETRIC_ALGORITHMS, DEFAULT_ALGORITHMS, fetchableUrl, JwtVerifier, toInvalidToken, trustedIssuerSchema } from './jwt-verifier.js';
export type { JwtVerifierDeps, JwtVerifierOptions, TrustedIssuerConfig, VerifiedJwt } from './jwt-verifier.js';
export { BackoffMemo } from './backoff-memo.js';
export { compileGlob } from './glob.js';
export type { GlobOptions, Matcher } from './glob.js';
