import type { ActorTrust } from '@tessera/plugin-sdk';
import { ConfigError } from '../config/errors.js';
import type { BrokerConfig } from '../config/schema.js';
import type { LoadedPlugin } from './loader.js';
import type { ValidatorRegistry } from './registry.js';

/**
 * Today's trust for the built-in plugins, applied when the config names none. Keyed by the package the
 * config loads (`use:`), not by the name a plugin gives itself: any plugin can call itself `spiffe`.
 */
export const BUILT_IN_ACTOR_TRUST: Readonly<Record<string, ActorTrust>> = {
  '@tessera/plugin-spiffe': 'workload',
  '@tessera/plugin-access-token': 'broker',
};

/**
 * Which validators' identities may act for others is the operator's grant (`delegation.actorTrust`, by
 * plugin name), not something a plugin declares about itself: a plugin only says which kind it can
 * support. An explicit list is the whole list; naming a plugin that is not loaded, or one without a
 * validator supporting that kind, stops startup.
 *
 * Separately, the validator that verifies this broker's own tokens (the built-in access-token plugin, or
 * a plugin granted `broker`) is the only one whose identities may carry the broker's issuer and bring a
 * delegation chain back in. That does not depend on whether such tokens may also act.
 */
export function grantActorTrust(delegation: BrokerConfig['delegation'], plugins: readonly LoadedPlugin[], validators: ValidatorRegistry): void {
  const problems: string[] = [];
  const capable = (plugin: LoadedPlugin, trust: ActorTrust) => (plugin.provides.validators ?? []).filter((validator) => validator.actorTrust === trust);
  for (const plugin of plugins) {
    const builtIn = BUILT_IN_ACTOR_TRUST[plugin.use];
    if (builtIn === 'broker') for (const validator of capable(plugin, 'broker')) validators.markBrokerTokenVerifier(validator);
    if (builtIn && delegation.actorTrust === undefined) for (const validator of capable(plugin, builtIn)) validators.grantTrust(validator, builtIn);
  }
  for (const [name, trust] of Object.entries(delegation.actorTrust ?? {})) {
    const plugin = plugins.find((candidate) => candidate.name === name);
    if (!plugin) {
      problems.push(`delegation.actorTrust.${name}: no plugin "${name}" is loaded`);
      continue;
    }
    const granted = capable(plugin, trust);
    if (granted.length === 0) {
      problems.push(`delegation.actorTrust.${name}: plugin "${name}" has no validator that supports ${trust} trust`);
      continue;
    }
    for (const validator of granted) {
      validators.grantTrust(validator, trust);
      if (trust === 'broker') validators.markBrokerTokenVerifier(validator);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
}
