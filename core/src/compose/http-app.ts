import type Koa from 'koa';
import type { DependencyContainer } from 'tsyringe';
import { tokens } from '@tessera/plugin-sdk';
import { MAX_ISSUED_TOKEN_BYTES_LIMIT } from '../config/schema.js';
import { coreTokens } from '../di/tokens.js';
import { provideFactory, resolve } from '../di/container.js';
import { ADMIN_REVOCATIONS_PATH } from '../http/admin-routes.js';
import { createHttpApp } from '../http/app.js';
import { authorizationServerMetadata } from '../http/metadata.js';
import type { ReadinessCheck } from '../http/readiness.js';
import { RemoteJwksCache } from '../keys/remote-jwks.js';
import { IntrospectionEndpoint } from '../oauth/introspection.js';
import { clientRateLimiterFor } from '../oauth/rate-limit.js';
import { RevocationEndpoint } from '../oauth/revocation.js';
import { TokenEndpoint } from '../oauth/token-endpoint.js';
import { AdminRevocationsEndpoint } from '../state/kill-switch-admin.js';
import { StoreUnsafe } from '../state/store.js';
import type { GenerationPlan } from './plan.js';
import type { ProcessScope } from './scope.js';

/**
 * The HTTP face of one planned config: its endpoints on the plan's container, readiness checks, the
 * metadata document, and the Koa app the process's listeners send requests to while this config serves.
 */
export function generationApp(plan: GenerationPlan, scope: ProcessScope): Koa {
  const { config, container, authenticator, validators, issuers } = plan;
  const { log, info, keyRing, metrics, tls, auditSink } = scope;
  provideFactory(
    container,
    coreTokens.tokenEndpoint,
    (c) =>
      new TokenEndpoint({
        authenticator: resolve(c, coreTokens.clientAuthenticator),
        pipeline: resolve(c, coreTokens.pipeline),
        audit: resolve(c, coreTokens.audit),
        clock: resolve(c, tokens.clock),
        log: resolve(c, tokens.logger),
        broker: resolve(c, tokens.brokerInfo),
        metrics,
        rateLimiter: clientRateLimiterFor(config, resolve(c, coreTokens.clientAuthenticator), {
          store: resolve(c, coreTokens.stateStore),
          clock: resolve(c, tokens.clock),
          log: resolve(c, tokens.logger),
          metrics,
        }),
      }),
  );
  // Both endpoints answer about the broker's own tokens, for an authenticated client, with an audit record.
  const ownTokenEndpointDeps = (c: DependencyContainer) => ({
    authenticator: resolve(c, coreTokens.clientAuthenticator),
    keyRing: resolve(c, tokens.keyRing),
    revocationList: resolve(c, tokens.revocationList),
    audit: resolve(c, coreTokens.audit),
    clock: resolve(c, tokens.clock),
    log: resolve(c, tokens.logger),
    broker: resolve(c, tokens.brokerInfo),
    // Not today's limit: a token issued before the limit was lowered must still be revocable (and known).
    maxTokenBytes: MAX_ISSUED_TOKEN_BYTES_LIMIT,
  });
  provideFactory(container, coreTokens.revocationEndpoint, (c) => new RevocationEndpoint(ownTokenEndpointDeps(c)));
  provideFactory(container, coreTokens.introspectionEndpoint, (c) => new IntrospectionEndpoint({ ...ownTokenEndpointDeps(c), clients: config.endpoints.introspection.clients, killSwitch: resolve(c, coreTokens.killSwitch) }));

  // What `/readyz` asks beyond the lifecycle state; each room that depends on something registers it here.
  const readinessChecks: ReadinessCheck[] = [{ name: 'keys', check: () => (keyRing.publicJwks().keys.length > 0 ? undefined : 'no signing key') }];
  if (tls) readinessChecks.push({ name: 'tls', check: () => tls.readiness() });
  if (auditSink) readinessChecks.push({ name: 'audit', check: () => auditSink.problem() });
  const store = resolve(container, coreTokens.stateStore);
  const jwks = resolve(container, tokens.jwksCache);
  if (jwks instanceof RemoteJwksCache) {
    readinessChecks.push({
      name: 'issuers',
      check: async () => {
        const cold = await jwks.coldSources();
        // A count only: the failed fetches are logged with their origins, /readyz is public.
        return cold.length === 0 ? undefined : `keys of ${cold.length} trusted issuer(s) not fetched yet`;
      },
    });
  }
  readinessChecks.push({ name: 'store', check: () => store.ping().then(() => undefined, (error: unknown) => (error instanceof StoreUnsafe ? error.message : `${store.kind} store unreachable`)) });

  return createHttpApp({
    readiness: () => scope.lifecycle.readiness,
    readinessChecks,
    admit: scope.admit,
    tokenEndpoint: resolve(container, coreTokens.tokenEndpoint),
    revocationEndpoint: resolve(container, coreTokens.revocationEndpoint),
    introspectionEndpoint: resolve(container, coreTokens.introspectionEndpoint),
    ...(config.admin.clients.length > 0
      ? {
          adminRevocations: new AdminRevocationsEndpoint({
            authenticator,
            killSwitch: resolve(container, coreTokens.killSwitch),
            audit: resolve(container, coreTokens.audit),
            clock: resolve(container, tokens.clock),
            log,
            clients: config.admin.clients,
            endpointUrl: `${info.issuer.replace(/\/$/, '')}${ADMIN_REVOCATIONS_PATH}`,
          }),
        }
      : {}),
    keyRing,
    jwksMaxAgeSeconds: config.keys.publishAheadSeconds,
    log,
    metrics,
    endpoints: config.endpoints,
    basePath: info.basePath,
    maxBodyBytes: config.limits.maxBodyBytes,
    metadata: authorizationServerMetadata({
      broker: info,
      jwksUri: info.jwksUri,
      grantTypes: [...plan.grantTypes],
      authMethods: authenticator.methodsSupported(),
      authSigningAlgorithms: authenticator.signingAlgorithms(),
      subjectTokenTypes: validators.types(),
      issuedTokenTypes: issuers.types(),
      ...(config.endpoints.revocation.enabled ? { revocationEndpoint: info.revocationEndpoint } : {}),
      ...(config.endpoints.introspection.enabled ? { introspectionEndpoint: info.introspectionEndpoint } : {}),
    }),
  });
}
