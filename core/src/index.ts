import 'reflect-metadata';

export { createBroker, brokerInfoFor } from './broker.js';
export type { Broker, BrokerOptions, RunningServer } from './broker.js';
export { loadConfigFile, parseConfigText, validateConfig } from './config/load.js';
export type { LoadedConfig } from './config/load.js';
export { ConfigError } from './config/errors.js';
export { brokerConfigSchema } from './config/schema.js';
export type { BrokerConfig, BrokerConfigInput, ClientConfig, PolicyRuleConfig } from './config/schema.js';
export { brokerJsonSchema } from './config/json-schema.js';
export { MemoryAuditSink } from './audit/audit-log.js';
export type { AuditRecord, AuditSink } from './audit/audit-log.js';
export { coreTokens } from './di/tokens.js';
export { hashClientSecret } from './oauth/client-secret.js';
export { TOKEN_TYPE_CLIENT } from './oauth/client-credentials.js';
export { compilePattern } from './policy/patterns.js';
// The plugin contracts, as core speaks them (defined in the SDK so plugins never depend on core).
export type { SubjectValidator, TokenIssuer, VerifiedIdentity, Grant, IssuedToken } from '@tessera/plugin-sdk';
