import type { SubjectValidator, TokenIssuer, TokenTypeUrn } from '@tessera/plugin-sdk';
import { ConfigError } from '../config/errors.js';

interface Provider {
  readonly tokenTypes: readonly TokenTypeUrn[];
}

/** Providers keyed by token type URN. A URN claimed twice is a startup error naming both plugins. */
export class TokenTypeRegistry<P extends Provider> {
  readonly #byType = new Map<string, { provider: P; plugin: string }>();

  constructor(private readonly kind: 'validator' | 'issuer') {}

  add(plugin: string, provider: P): void {
    if (provider.tokenTypes.length === 0) throw new ConfigError([`plugin ${plugin}: ${this.kind} declares no token types`]);
    for (const type of provider.tokenTypes) {
      const existing = this.#byType.get(type);
      if (existing) {
        throw new ConfigError([`token type ${type} is claimed by two ${this.kind}s: plugin "${existing.plugin}" and plugin "${plugin}"`]);
      }
      this.#byType.set(type, { provider, plugin });
    }
  }

  get(type: string): P | undefined {
    return this.#byType.get(type)?.provider;
  }

  pluginOf(type: string): string | undefined {
    return this.#byType.get(type)?.plugin;
  }

  types(): TokenTypeUrn[] {
    return [...this.#byType.keys()] as TokenTypeUrn[];
  }
}

export class ValidatorRegistry extends TokenTypeRegistry<SubjectValidator> {
  constructor() {
    super('validator');
  }
}

export class IssuerRegistry extends TokenTypeRegistry<TokenIssuer> {
  constructor() {
    super('issuer');
  }
}
