import semver from 'semver';
import type { ActorTrust, Grant, SubjectValidator, TokenIssuer, TokenTypeUrn } from '@tessera/plugin-sdk';
import { ConfigError } from '../config/errors.js';

/** The plugin API version that added `Grant.act` and `Grant.claims`. */
const GRANT_EXTENSIONS_API = '1.2.0';

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

/** Most clock skew a plugin may declare: beyond it an expired token stays usable for too long. */
export const MAX_DECLARED_CLOCK_SKEW_SECONDS = 300;

/** Checks a plugin's declared `clockSkewSeconds` (core bounds acceptance and replay memory by it). */
export function declaredSkewProblem(plugin: string, what: string, skew: unknown): string | undefined {
  if (skew === undefined) return undefined;
  if (typeof skew === 'number' && Number.isInteger(skew) && skew >= 0 && skew <= MAX_DECLARED_CLOCK_SKEW_SECONDS) return undefined;
  return `plugin ${plugin}: ${what} declares clockSkewSeconds ${String(skew).slice(0, 32)}; it must be a whole number from 0 to ${MAX_DECLARED_CLOCK_SKEW_SECONDS}`;
}

export class ValidatorRegistry extends TokenTypeRegistry<SubjectValidator> {
  /** Actor trust the operator granted (`delegation.actorTrust`), by validator. */
  readonly #trust = new Map<SubjectValidator, ActorTrust>();
  /** Validators that verify this broker's own tokens (see `grantActorTrust`). */
  readonly #brokerTokenVerifiers = new Set<SubjectValidator>();

  constructor() {
    super('validator');
  }

  override add(plugin: string, provider: SubjectValidator): void {
    const problem = declaredSkewProblem(plugin, 'a validator', provider.clockSkewSeconds);
    if (problem) throw new ConfigError([problem]);
    super.add(plugin, provider);
  }

  /** Records the operator's grant; only a kind the validator says it supports may be granted. */
  grantTrust(validator: SubjectValidator, trust: ActorTrust): void {
    if (validator.actorTrust !== trust) throw new Error(`validator does not support ${trust} trust`);
    this.#trust.set(validator, trust);
  }

  markBrokerTokenVerifier(validator: SubjectValidator): void {
    if (validator.actorTrust !== 'broker') throw new Error('validator does not support broker trust');
    this.#brokerTokenVerifiers.add(validator);
  }

  /** How identities of `type` are trusted to act; undefined: not at all. */
  trustOf(type: string): ActorTrust | undefined {
    const validator = this.get(type);
    return validator && this.#trust.get(validator);
  }

  /** True when `type` is verified by the validator of this broker's own tokens: only its identities may carry the broker's issuer (and a chain). */
  verifiesBrokerTokens(type: string): boolean {
    const validator = this.get(type);
    return validator !== undefined && this.#brokerTokenVerifiers.has(validator);
  }
}

export class IssuerRegistry extends TokenTypeRegistry<TokenIssuer> {
  readonly #knowsGrantExtensions = new Set<string>();

  constructor() {
    super('issuer');
  }

  /** `apiVersion` is the plugin's declared API range: it tells whether the issuer knows `act` and `claims`. */
  override add(plugin: string, provider: TokenIssuer, apiVersion = GRANT_EXTENSIONS_API): void {
    super.add(plugin, provider);
    const oldest = semver.validRange(apiVersion) ? semver.minVersion(apiVersion) : null;
    if (oldest && semver.gte(oldest, GRANT_EXTENSIONS_API)) for (const type of provider.tokenTypes) this.#knowsGrantExtensions.add(type);
  }

  /**
   * Why no issuer will take `grant` for `type`, if so: none is registered, or it was written against an
   * API older than 1.2 and would silently drop a delegation chain or mapped claims.
   */
  grantRefusal(type: string, grant: Pick<Grant, 'act' | 'claims'>): string | undefined {
    if (!this.get(type)) return 'no issuer for requested_token_type';
    if ((grant.act || grant.claims) && !this.#knowsGrantExtensions.has(type)) {
      return `issuer plugin ${this.pluginOf(type)} predates delegation and claim mapping (plugin API < 1.2)`;
    }
    return undefined;
  }
}
