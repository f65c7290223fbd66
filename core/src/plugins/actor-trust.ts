import type { ActorTrust } from '@tessera/plugin-sdk';
import { ConfigError } from '../config/errors.js';
import type { BrokerConfig } from '../config/schema.js';
import type { LoadedPlugin } from './loader.js';
import type { ValidatorRegistry } from './registry.js';

/** Today's trust for the built-in plugins, applied to those that are loaded when the config names none. */
export const DEFAULT_ACTOR_TRUST: Readonly<Record<string, ActorTrust>> = { spiffe: 'workload', 'access-token': 'broker' };

/**
 * Which validators' identities may act for others is the operator's grant (`delegation.actorTrust`), not
 * something a plugin declares about itself: a plugin only says which kind it can support. An explicit list
 * is the whole list; naming a plugin that is not loaded, or one without a validator supporting that kind,
 * stops startup.
 */
export function grantActorTrust(delegation: BrokerConfig['delegation'], plugins: readonly LoadedPlugin[], validators: ValidatorRegistry): void {
  const explicit = delegation.actorTrust !== undefined;
  const problems: string[] = [];
  for (const [name, trust] of Object.entries(delegation.actorTrust ?? DEFAULT_ACTOR_TRUST)) {
    const plugin = plugins.find((candidate) => candidate.name === name);
    if (!plugin) {
      if (explicit) problems.push(`delegation.actorTrust.${name}: no plugin "${name}" is loaded`);
      continue;
    }
    const capable = (plugin.provides.validators ?? []).filter((validator) => validator.actorTrust === trust);
    if (capable.length === 0) {
      problems.push(`delegation.actorTrust.${name}: plugin "${name}" has no validator that supports ${trust} trust`);
      continue;
    }
    for (const validator of capable) validators.grantTrust(validator, trust);
  }
  if (problems.length > 0) throw new ConfigError(problems);
}
