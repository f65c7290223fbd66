import 'reflect-metadata';

export { createBroker, brokerInfoFor } from './broker.js';
export type { Broker, BrokerOptions, RunningServer } from './broker.js';
export type { DrainOutcome, Readiness } from './http/drain.js';
export { loadConfigFile, loadConfigFiles, parseConfigText, validateConfig } from './config/load.js';
export type { LoadedConfig } from './config/load.js';
export { printableConfig, renderConfig } from './config/print.js';
export { redactSecrets } from './config/redact.js';
export { ConfigError } from './config/errors.js';
export { brokerConfigSchema } from './config/schema.js';
export type { BrokerConfig, BrokerConfigInput, ClientConfig, PolicyRuleConfig } from './config/schema.js';
export { brokerJsonSchema } from './config/json-schema.js';
export { resolvePlugins } from './plugins/loader.js';
export { checkConfig } from './config/check.js';
export type { LoadedPlugin, PluginEntryResult } from './plugins/loader.js';
export { MemoryAuditSink } from './audit/audit-log.js';
export type { AuditEntry, AuditRecord, AuditSink, IntrospectionAuditRecord, RevocationAuditRecord } from './audit/audit-log.js';
export { coreTokens } from './di/tokens.js';
export { hashClientSecret } from './oauth/client-secret.js';
export { TOKEN_TYPE_CLIENT } from './oauth/client-credentials.js';
export { compilePattern } from './policy/patterns.js';
// Core service implementations, for hosts and plugin tests that need them outside a broker.
export { GuardedFetcher } from './http/fetcher.js';
export type { GuardedFetcherOptions, Resolver } from './http/fetcher.js';
export { RemoteJwksCache, DEFAULT_JWKS_OPTIONS } from './keys/remote-jwks.js';
export type { RemoteJwksOptions } from './keys/remote-jwks.js';
export { LocalKeyRing, loadKeyRing, generatePrivateJwk } from './keys/key-ring.js';
export { InMemoryReplayStore } from './oauth/replay-store.js';
export { InMemoryRevocationList } from './oauth/revocation.js';
export { silentLogger } from './logging.js';
// The plugin contracts, as core speaks them (defined in the SDK so plugins never depend on core).
export type { SubjectValidator, TokenIssuer, VerifiedIdentity, Grant, IssuedToken } from '@tessera/plugin-sdk';
