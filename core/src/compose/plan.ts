import type { DependencyContainer } from 'tsyringe';
import { tokens, TOKEN_TYPE_JWT_SVID, type ClientAssertionVerifier, type Logger, type PluginPurpose } from '@tessera/plugin-sdk';
import { ConfigError } from '../config/errors.js';
import type { ConfigSource } from '../reload/reloader.js';
import type { BrokerConfig } from '../config/schema.js';
import { coreTokens } from '../di/tokens.js';
import { loadSigningKeys } from '../keys/key-ring.js';
import type { KeyPlan, RotatingKeyRing } from '../keys/key-rotation.js';
import { provideFactory, provideValue, resolve } from '../di/container.js';
import { ClientAuthenticator } from '../oauth/client-auth.js';
import { ExchangePipeline, type RegisteredExtractor } from '../oauth/exchange-pipeline.js';
import { VerifiedTokenCache } from '../oauth/verified-token-cache.js';
import { GRANT_TYPE_URIS } from '../oauth/token-endpoint.js';
import { grantActorTrust } from '../plugins/actor-trust.js';
import { initPlugins, resolvePluginEntries, type LoadedPlugin, type PluginEntryResult } from '../plugins/loader.js';
import { declaredSkewProblem, IssuerRegistry, ValidatorRegistry } from '../plugins/registry.js';
import { PolicyEngine } from '../policy/policy-engine.js';
import { checkAdminClients } from '../state/kill-switch-admin.js';
import { collectProblems, locateProblems } from './problems.js';
import { closeAll } from './scope.js';

export type { ConfigSource };

/** One config made whole: started plugins, registries, and the policy, client authenticator and pipeline on its container. */
export interface GenerationPlan {
  readonly config: BrokerConfig;
  /** A child of the process container; the config's services are registered here. */
  readonly container: DependencyContainer;
  readonly plugins: readonly LoadedPlugin[];
  readonly validators: ValidatorRegistry;
  readonly issuers: IssuerRegistry;
  readonly authenticator: ClientAuthenticator;
  readonly pipeline: ExchangePipeline;
  /** Grant type URIs some client may use (for the metadata document). */
  readonly grantTypes: readonly string[];
  /** Releases what plugins opened, then the container's instances. */
  close(): Promise<void>;
}

export interface PlanOptions {
  /** `check` for read-only commands: plugins are told so and open nothing. */
  readonly purpose: PluginPurpose;
  /** Plugins the caller has already resolved (startup resolves them before anything touches the disk). */
  readonly preResolved?: readonly PluginEntryResult[];
}

/**
 * Plans one broker from its config: resolves and starts plugins, builds the registries, policy, client
 * authenticator and exchange pipeline, and runs every cross-check between them. `serve`, `config
 * validate`, `plugins list` and `policy explain` all come through here, so none can accept a config
 * another refuses. Every problem is collected and reported at once, each located at `file:line`.
 *
 * The parent container supplies the process's services (clock, logger, fetcher, JWKS cache, key ring,
 * store, kill switch, replay store, revocation list, audit); `scope.ts` builds real or inert ones.
 */
export async function planGeneration(source: ConfigSource, parent: DependencyContainer, options: PlanOptions): Promise<GenerationPlan> {
  const { config, baseDir, locate } = source;
  const problems: string[] = [];
  const collect = <T>(step: () => T) => collectProblems(problems, step);
  const resolution = options.preResolved ? { results: [...options.preResolved], problems: [] } : await resolvePluginEntries(config.plugins, baseDir, locate);
  problems.push(...resolution.problems);
  // A config that will be refused starts nothing that would dial out; a check goes on, to report more.
  if (options.purpose === 'serve' && problems.length > 0) throw new ConfigError(locateProblems(problems, locate));

  const container = parent.createChildContainer();
  const closers: (() => void | Promise<void>)[] = [() => container.clearInstances()];
  const close = closeAll(closers);
  provideValue(container, coreTokens.config, config);
  try {
    const started = await initPlugins(resolution.results, container, (closer) => closers.push(closer), baseDir, options.purpose);
    problems.push(...started.problems);
    // Checks that need every plugin's contribution would only report noise when some plugin is missing.
    const pluginsComplete = problems.length === 0;
    const { plugins } = started;

    const validators = new ValidatorRegistry();
    const issuers = new IssuerRegistry();
    for (const plugin of plugins) {
      for (const validator of plugin.provides.validators ?? []) await collect(() => validators.add(plugin.name, validator));
      for (const issuer of plugin.provides.issuers ?? []) await collect(() => issuers.add(plugin.name, issuer, plugin.apiVersion));
    }
    if (pluginsComplete) await collect(() => grantActorTrust(config.delegation, plugins, validators));
    const extractors: RegisteredExtractor[] = plugins.flatMap((plugin) => (plugin.provides.attributeExtractors ?? []).map((extractor) => ({ plugin: plugin.name, extractor })));
    const assertionVerifiers = new Map<string, ClientAssertionVerifier>();
    for (const plugin of plugins) {
      for (const verifier of plugin.provides.clientAssertionVerifiers ?? []) {
        const skewProblem = declaredSkewProblem(plugin.name, 'a client assertion verifier', verifier.clockSkewSeconds);
        if (skewProblem) problems.push(skewProblem);
        for (const type of verifier.assertionTypes) {
          if (assertionVerifiers.has(type)) problems.push(`client assertion type ${type} is claimed by two plugins (second: "${plugin.name}")`);
          else assertionVerifiers.set(type, verifier);
        }
      }
    }
    provideValue(container, coreTokens.validators, validators);
    provideValue(container, coreTokens.issuers, issuers);
    provideFactory(container, coreTokens.policy, () => new PolicyEngine(config.policy.rules, { brokerIssuer: config.issuer, conditionTimeoutMs: config.limits.conditionTimeoutMs }));
    provideFactory(
      container,
      coreTokens.clientAuthenticator,
      (c) =>
        new ClientAuthenticator(config.clients, config.clientAuth, {
          jwks: resolve(c, tokens.jwksCache),
          replay: resolve(c, tokens.replayStore),
          clock: resolve(c, tokens.clock),
          broker: resolve(c, tokens.brokerInfo),
          assertionVerifiers,
          verificationTimeoutMs: config.limits.validationTimeoutMs,
          log: resolve(c, tokens.logger),
        }),
    );
    provideFactory(
      container,
      coreTokens.pipeline,
      (c) =>
        new ExchangePipeline({
          validators: resolve(c, coreTokens.validators),
          extractors,
          issuers: resolve(c, coreTokens.issuers),
          policy: resolve(c, coreTokens.policy),
          clock: resolve(c, tokens.clock),
          log: resolve(c, tokens.logger),
          broker: resolve(c, tokens.brokerInfo),
          validationTimeoutMs: config.limits.validationTimeoutMs,
          maxChainDepth: config.delegation.maxChainDepth,
          maxIssuedTokenBytes: config.limits.maxIssuedTokenBytes,
          killSwitch: resolve(c, coreTokens.killSwitch),
          verifiedTokens: new VerifiedTokenCache(config.limits.verifiedTokens, resolve(c, coreTokens.verifiedTokenCounter)),
        }),
    );

    // Built now, so bad client keys, hashes or rule defaults are refused here, not at the first request.
    await collect(() => resolve(container, coreTokens.policy));
    const authenticator = await collect(() => resolve(container, coreTokens.clientAuthenticator));
    if (authenticator) {
      await collect(() => checkFrontDoors(config, issuers, authenticator, pluginsComplete));
      await collect(() => checkAdminClients(config, authenticator));
      const unverifiable = authenticator.requiredAssertionTypes().filter((type) => !assertionVerifiers.has(type));
      if (pluginsComplete && unverifiable.length > 0) {
        problems.push(`clients: no plugin verifies client assertions of type ${unverifiable.join(', ')} (spiffe_jwt clients need @tessera/plugin-spiffe)`);
      }
    }
    if (problems.length > 0 || !authenticator) throw new ConfigError(locateProblems(problems, locate));
    const grantTypes = [...new Set(config.clients.flatMap((client) => client.grantTypes))].map((name) => GRANT_TYPE_URIS[name]);
    return { config, container, plugins, validators, issuers, authenticator, pipeline: resolve(container, coreTokens.pipeline), grantTypes, close };
  } catch (error) {
    // Plugins may have opened resources before a later check failed.
    await close().catch(() => undefined);
    throw error;
  }
}

/** The longest lifetime a token signed under `config` can have: policy grants it, issuers only shorten it. */
function longestTokenLifetimeSeconds(config: BrokerConfig): number {
  return Math.max(0, ...config.policy.rules.map((rule) => rule.grant.maxLifetimeSeconds));
}

/**
 * The config's signing keys read from their files and scheduled against what `keyRing` already publishes.
 * `serve` runs it before plugins start (with `generate` as configured); read-only commands with `generate:
 * false`, so no development key is written. Throws `ConfigError` (unlocated) on a bad key or schedule.
 */
export async function planKeySchedule(config: BrokerConfig, keyRing: RotatingKeyRing, options: { baseDir: string; log: Logger; generate: boolean }): Promise<KeyPlan> {
  const keys = await loadSigningKeys({ ...config.keys, generate: options.generate && config.keys.generate }, { baseDir: options.baseDir, dataDir: config.dataDir, log: options.log });
  return keyRing.plan(keys, { publishAheadSeconds: config.keys.publishAheadSeconds, maxTokenLifetimeSeconds: longestTokenLifetimeSeconds(config) });
}

/** A door that could never answer is a config error, not a stream of failed requests. */
function checkFrontDoors(config: BrokerConfig, issuers: IssuerRegistry, authenticator: ClientAuthenticator, pluginsComplete: boolean): void {
  const problems: string[] = [];
  const door = config.endpoints.spiffeExchange;
  if (door.enabled) {
    if (pluginsComplete && !issuers.get(TOKEN_TYPE_JWT_SVID)) problems.push(`endpoints.spiffeExchange: no issuer plugin handles ${TOKEN_TYPE_JWT_SVID} (e.g. @tessera/plugin-spire-jwt-svid)`);
    if (door.publicClient !== undefined && authenticator.clientConfig(door.publicClient)?.auth.method !== 'none') {
      problems.push(`endpoints.spiffeExchange.publicClient: "${door.publicClient}" is not a configured client with auth method none`);
    }
  }
  const introspection = config.endpoints.introspection;
  if (introspection.enabled) {
    // A public client can never introspect, and an unknown id is a typo that would silently grant nothing.
    for (const [index, id] of introspection.clients.entries()) {
      const method = authenticator.clientConfig(id)?.auth.method;
      if (method === undefined || method === 'none') problems.push(`endpoints.introspection.clients[${index}]: "${id}" is not a configured client that authenticates`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
}
