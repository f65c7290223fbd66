import { token, type Counter } from '@tessera/plugin-sdk';
import type { AuditSink } from '../audit/audit-log.js';
import type { BrokerConfig } from '../config/schema.js';
import type { ClientAuthenticator } from '../oauth/client-auth.js';
import type { ExchangePipeline } from '../oauth/exchange-pipeline.js';
import type { IntrospectionEndpoint } from '../oauth/introspection.js';
import type { RevocationEndpoint } from '../oauth/revocation.js';
import type { TokenEndpoint } from '../oauth/token-endpoint.js';
import type { IssuerRegistry, ValidatorRegistry } from '../plugins/registry.js';
import type { PolicyEngine } from '../policy/policy-engine.js';
import type { KillSwitch } from '../state/kill-switch.js';
import type { StateStore } from '../state/store.js';

/** Core-only DI tokens. Plugins see only the SDK's `tokens`. */
export const coreTokens = {
  config: token<BrokerConfig>('tessera.config'),
  validators: token<ValidatorRegistry>('tessera.validators'),
  issuers: token<IssuerRegistry>('tessera.issuers'),
  policy: token<PolicyEngine>('tessera.policy'),
  clientAuthenticator: token<ClientAuthenticator>('tessera.clientAuthenticator'),
  audit: token<AuditSink>('tessera.audit'),
  pipeline: token<ExchangePipeline>('tessera.pipeline'),
  tokenEndpoint: token<TokenEndpoint>('tessera.tokenEndpoint'),
  revocationEndpoint: token<RevocationEndpoint>('tessera.revocationEndpoint'),
  introspectionEndpoint: token<IntrospectionEndpoint>('tessera.introspectionEndpoint'),
  stateStore: token<StateStore>('tessera.stateStore'),
  killSwitch: token<KillSwitch>('tessera.killSwitch'),
  /** Counts subject and actor validations, verified or reused (process-wide, so reloads keep counting). */
  verifiedTokenCounter: token<Counter>('tessera.verifiedTokenCounter'),
} as const;
