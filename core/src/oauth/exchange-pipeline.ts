import {
  InvalidGrant,
  InvalidRequest,
  InvalidToken,
  OAuthError,
  ServerError,
  TemporarilyUnavailable,
  TOKEN_TYPE_ACCESS_TOKEN,
  type AttributeExtractor,
  type AuthenticatedClient,
  type BrokerInfo,
  type Clock,
  type Grant,
  type IssuedToken,
  type Logger,
  type SubjectValidator,
  type TokenTypeUrn,
  type TokenIssuer,
  type ValidationContext,
  type ValidationRole,
  type VerifiedIdentity,
} from '@tessera/plugin-sdk';
import type { GrantTypeName } from '../config/schema.js';
import { planDelegation, type ChainMember } from '../policy/delegation.js';
import { checkIdentity, isAttributeMap } from './identity-checks.js';
import type { FrontDoor } from './request.js';
import { unsafeGrantValue } from './target-values.js';
import type { IssuerRegistry, ValidatorRegistry } from '../plugins/registry.js';
import type { PolicyDecision, PolicyEngine, PolicyRequest, RuleExplanation } from '../policy/policy-engine.js';
import { KillSwitchQuery, type KillSwitch } from '../state/kill-switch.js';
import { errorCode, inSpan, markFailed, tracer } from '../telemetry/tracing.js';
import { VerifiedTokenCache } from './verified-token-cache.js';
import { CallBudget } from './call-budget.js';

/** RFC 8693 §2.2.2: one fixed description for every kill-switch refusal; the audit record names the entry kind. */
export const REVOKED_PARTY = 'a party to this request has been revoked';

/** What the pipeline learned so far; the token endpoint turns it into the audit record. */
export interface ExchangeTrace {
  grantType?: string;
  client?: AuthenticatedClient;
  subject?: VerifiedIdentity;
  actor?: VerifiedIdentity;
  /** Delegation chain of the token to be issued, current actor first. */
  chain?: readonly ChainMember[];
  requested?: { tokenType?: string; audiences: readonly string[]; resources: readonly string[]; scopes?: readonly string[] };
  ruleId?: string;
  issued?: { jti?: string; tokenType: string; subject?: string; expiresIn: number; audiences: readonly string[]; scopes: readonly string[] };
}

export interface ExchangeInput {
  readonly grantType: GrantTypeName;
  readonly grantTypeUri: string;
  readonly endpoint: FrontDoor;
  readonly client: AuthenticatedClient;
  readonly subject: VerifiedIdentity;
  readonly actor?: VerifiedIdentity;
  readonly requestedTokenType?: string;
  readonly audiences: readonly string[];
  readonly resources: readonly string[];
  readonly scopes: readonly string[] | undefined;
}

/** What policy granted, and the issuer that will mint it. */
export interface ExchangeDecision {
  readonly grant: Grant;
  readonly ruleId: string;
  readonly issuer: TokenIssuer;
  readonly requestedTokenType: string;
  readonly now: Date;
}

export interface ExchangeResult {
  readonly grant: Grant;
  readonly issued: IssuedToken;
}

/** An attribute extractor with the plugin that provided it (for logs). */
export interface RegisteredExtractor {
  readonly plugin: string;
  readonly extractor: AttributeExtractor;
}

export interface PipelineDeps {
  readonly validators: ValidatorRegistry;
  readonly extractors?: readonly RegisteredExtractor[];
  readonly issuers: IssuerRegistry;
  readonly policy: PolicyEngine;
  readonly clock: Clock;
  readonly log: Logger;
  readonly broker: BrokerInfo;
  readonly validationTimeoutMs: number;
  /** Most actors a chain may hold (`delegation.maxChainDepth`). */
  readonly maxChainDepth: number;
  /** Issued tokens larger than this are refused (`limits.maxIssuedTokenBytes`). */
  readonly maxIssuedTokenBytes: number;
  /** Operator revocations of clients, subjects, issuers, SPIFFE IDs and broker tokens. */
  readonly killSwitch?: KillSwitch;
  /** Subject and actor identities reused for validators that allow it; none when absent. */
  readonly verifiedTokens?: VerifiedTokenCache;
}

export interface ValidateOptions {
  /** Only the broker itself is an acceptable audience (the SPIFFE door). */
  readonly brokerAudienceOnly?: boolean;
  /** The authenticated client, handed to the validator (a broker token may be exchanged by its audience). */
  readonly client?: AuthenticatedClient;
}

/**
 * validate → policy → issue, shared by every grant and every front door. Knows nothing of HTTP.
 */
export class ExchangePipeline {
  readonly #brokerAudiences: ReadonlySet<string>;

  constructor(private readonly deps: PipelineDeps) {
    this.#brokerAudiences = new Set([deps.broker.issuer, deps.broker.tokenEndpoint]);
  }

  /** Runs the validator registered for `tokenType`, mapping every failure to the error the role calls for. */
  async validate(token: string, tokenType: string, role: ValidationRole, options: ValidateOptions = {}): Promise<VerifiedIdentity> {
    const validator = this.deps.validators.get(tokenType);
    if (!validator) {
      if (role === 'assertion') throw new InvalidGrant('assertion type is not supported', { detail: 'no validator for jwt' });
      throw new InvalidRequest(`unsupported ${role}_token_type`, { detail: `no validator for ${role}_token_type` });
    }
    // RFC 7523 §3: a JWT bearer assertion names this broker; the SPIFFE door asks the same of its tokens.
    // Extra audiences a plugin was configured to accept never apply there.
    const brokerAudienceOnly = role === 'assertion' || options.brokerAudienceOnly === true;
    const plugin = this.deps.validators.pluginOf(tokenType) ?? 'unknown';
    return inSpan(`validate ${plugin}`, { 'tessera.plugin': plugin, 'tessera.token_type': tokenType, 'tessera.validation.role': role }, () =>
      this.#validate(validator, token, tokenType, role, options.client, brokerAudienceOnly),
    );
  }

  async #validate(
    validator: SubjectValidator,
    token: string,
    tokenType: string,
    role: ValidationRole,
    client: AuthenticatedClient | undefined,
    brokerAudienceOnly: boolean,
  ): Promise<VerifiedIdentity> {
    const budget = new CallBudget(this.deps.validationTimeoutMs, () => new TemporarilyUnavailable('token validation timed out, retry later', { detail: `${role} validation timeout` }));
    const timedOut = budget.expired;
    const ctx: ValidationContext = {
      role,
      tokenType: tokenType as TokenTypeUrn,
      brokerIssuer: this.deps.broker.issuer,
      tokenEndpoint: this.deps.broker.tokenEndpoint,
      now: this.deps.clock.now(),
      signal: budget.signal,
      ...(brokerAudienceOnly ? { brokerAudienceOnly: true } : {}),
      ...(client ? { client } : {}),
    };
    try {
      const identity = checkIdentity(await Promise.race([this.#verified(validator, token, ctx), timedOut]), {
        tokenType,
        now: ctx.now,
        clockSkewSeconds: validator.clockSkewSeconds,
        ...(brokerAudienceOnly ? { brokerAudiences: this.#brokerAudiences } : {}),
      });
      // This broker's tokens are verified only by the validator trusted with them (the one that checks its
      // keys, revocation and audience binding); another validator trusting the broker's JWKS must not be a
      // way around those.
      if (identity.issuer === this.deps.broker.issuer && !this.deps.validators.verifiesBrokerTokens(tokenType)) {
        throw new InvalidToken('untrusted_issuer', 'a token of this broker is accepted only as an access_token');
      }
      return await Promise.race([this.#enrich(identity, ctx), timedOut]);
    } catch (error) {
      throw this.#roleError(error, role, tokenType);
    } finally {
      budget.end();
    }
  }

  /**
   * The validator's answer, or one it gave for the same token and context before, where the validator
   * allows reuse. Only subject and actor tokens: client assertions and JWT bearer assertions are
   * single-use proofs, checked (and remembered as used) every time.
   */
  async #verified(validator: SubjectValidator, token: string, ctx: ValidationContext): Promise<VerifiedIdentity> {
    const cache = this.deps.verifiedTokens;
    if (!cache || (ctx.role !== 'subject' && ctx.role !== 'actor')) return validator.validate(token, ctx);
    const caching = cache.enabled ? validator.caching : undefined;
    const key = caching ? VerifiedTokenCache.key(token, ctx) : undefined;
    const reused = key === undefined ? undefined : cache.get(key, ctx.now);
    if (reused) {
      try {
        await caching!.recheck?.(reused, ctx);
      } catch (error) {
        cache.delete(key!);
        throw error;
      }
      cache.count('reused');
      return reused;
    }
    const identity = await validator.validate(token, ctx);
    cache.count('verified');
    // What a plugin returned is shape-checked by the caller, reused or not; only a dated identity is kept.
    if (key !== undefined && (identity as Partial<VerifiedIdentity> | undefined)?.expiresAt instanceof Date) cache.set(key, identity, ctx.now);
    return identity;
  }

  /** Runs the attribute extractors that apply; validator attributes win over extracted ones. */
  async #enrich(identity: VerifiedIdentity, ctx: ValidationContext): Promise<VerifiedIdentity> {
    const applicable = (this.deps.extractors ?? []).filter(({ extractor }) => !extractor.tokenTypes || extractor.tokenTypes.includes(identity.tokenType));
    if (applicable.length === 0) return identity;
    const added: Record<string, string | readonly string[]> = {};
    for (const { plugin, extractor } of applicable) {
      let extracted: unknown;
      try {
        extracted = await extractor.extract(identity, ctx);
      } catch (error) {
        if (error instanceof OAuthError) throw error;
        this.deps.log.error({ err: error, plugin }, 'attribute extractor plugin fault');
        throw new ExtractorFault();
      }
      if (!isAttributeMap(extracted)) {
        this.deps.log.error({ plugin }, 'attribute extractor returned something other than string attributes');
        throw new ExtractorFault();
      }
      for (const [name, value] of Object.entries(extracted)) {
        if (Object.hasOwn(identity.attributes, name) || Object.hasOwn(added, name)) {
          this.deps.log.warn({ plugin, attribute: name }, 'attribute extractor tried to replace an existing attribute; ignored');
        } else {
          added[name] = value;
        }
      }
    }
    return { ...identity, attributes: { ...identity.attributes, ...added } };
  }

  /**
   * The decision half of an exchange: the issuer, the delegation chain, the kill switch, policy and the
   * checks on its grant. Throws the refusal a request would get. `tessera policy explain` calls this too
   * (with `explain`, which receives every rule's explanation, and the instant it describes), so an
   * explanation cannot disagree with a request, save for what lives in a shared store explain does not
   * contact (kill-switch entries), which it says it did not check.
   */
  async decide(input: ExchangeInput, trace: ExchangeTrace, explain?: { rules?: readonly RuleExplanation[]; readonly now?: Date }): Promise<ExchangeDecision> {
    const requestedTokenType = input.requestedTokenType ?? TOKEN_TYPE_ACCESS_TOKEN;
    const issuer = this.deps.issuers.get(requestedTokenType);
    if (!issuer) throw new InvalidRequest('unsupported requested_token_type', { detail: 'no issuer for requested_token_type' });

    const { validators } = this.deps;
    const actorTrust = input.actor && validators.trustOf(input.actor.tokenType);
    // Only this broker's own tokens bring a chain (planDelegation), whether or not they may also act.
    const subjectTrust = input.grantType !== 'client_credentials' && validators.verifiesBrokerTokens(input.subject.tokenType) ? 'broker' : undefined;
    const { members: chain } = planDelegation(
      {
        client: input.client,
        subject: input.subject,
        ...(subjectTrust ? { subjectTrust } : {}),
        ...(input.actor ? { actor: input.actor } : {}),
        ...(actorTrust ? { actorTrust } : {}),
        brokerIssuer: this.deps.broker.issuer,
        maxChainDepth: this.deps.maxChainDepth,
      },
      (members) => (trace.chain = members),
    );

    await this.#checkKillSwitch(input, chain);

    const now = explain?.now ?? this.deps.clock.now();
    const subjectValidator = input.grantType === 'client_credentials' ? undefined : validators.pluginOf(input.subject.tokenType);
    const actorValidator = input.actor && validators.pluginOf(input.actor.tokenType);
    const request: PolicyRequest = {
      grantType: input.grantType,
      grantTypeUri: input.grantTypeUri,
      endpoint: input.endpoint,
      client: input.client,
      subject: input.subject,
      ...(subjectValidator ? { subjectValidator } : {}),
      ...(input.actor ? { actor: input.actor } : {}),
      ...(actorValidator ? { actorValidator } : {}),
      ...(actorTrust ? { actorTrust } : {}),
      chain,
      requestedTokenType: requestedTokenType as TokenTypeUrn,
      targets: [...input.audiences, ...input.resources],
      scopes: input.scopes,
      now,
    };
    let decision: PolicyDecision;
    if (explain) {
      const explained = this.deps.policy.explain(request);
      explain.rules = explained.rules;
      decision = explained.decision;
    } else {
      decision = this.#decide(request);
    }
    trace.ruleId = decision.ruleId;
    if (!decision.allowed) throw decision.error;

    const { grant } = decision;
    // A signed token never carries a value a request could not.
    const unsafe = unsafeGrantValue(grant);
    if (unsafe) throw InvalidRequest.policy(unsafe);
    const unfit = this.deps.issuers.grantRefusal(requestedTokenType, grant);
    if (unfit) throw InvalidRequest.policy(unfit);
    return { grant, ruleId: decision.ruleId, issuer, requestedTokenType, now };
  }

  async exchange(input: ExchangeInput, trace: ExchangeTrace): Promise<ExchangeResult> {
    const decision = await this.decide(input, trace);
    const { issuer, requestedTokenType, now } = decision;
    const issuerPlugin = this.deps.issuers.pluginOf(requestedTokenType) ?? 'unknown';
    const issued = await inSpan(`issue ${issuerPlugin}`, { 'tessera.plugin': issuerPlugin, 'tessera.token_type': requestedTokenType }, async () => {
      // Only the signal: an issuer that ignores it is not raced (what it signs must not be dropped halfway).
      const budget = new CallBudget(this.deps.validationTimeoutMs, () => new TemporarilyUnavailable('token issuance timed out, retry later', { detail: 'issue timeout' }));
      try {
        return await issuer.issue(decision.grant, { brokerIssuer: this.deps.broker.issuer, now, signal: budget.signal });
      } catch (error) {
        if (error instanceof OAuthError) throw error;
        this.deps.log.error({ err: error, plugin: issuerPlugin }, 'issuer plugin fault');
        throw new ServerError(undefined, { detail: 'issuer plugin fault' });
      } finally {
        budget.end();
      }
    });
    // Fail closed if an issuer would outlive what policy granted.
    if (!(issued.expiresIn > 0 && issued.expiresIn <= decision.grant.lifetimeSeconds)) {
      this.deps.log.error({ plugin: this.deps.issuers.pluginOf(requestedTokenType) }, 'issuer exceeded the granted lifetime');
      throw new ServerError(undefined, { detail: 'issuer exceeded granted lifetime' });
    }
    // A token too large for headers would fail somewhere downstream; refuse it here, where it is explainable.
    if (issued.token.length > this.deps.maxIssuedTokenBytes) {
      throw new InvalidRequest('the token to issue would be too large', { detail: `issued_token_too_large (rule ${decision.ruleId})` });
    }
    trace.issued = {
      ...(issued.jti ? { jti: issued.jti } : {}),
      tokenType: issued.issuedTokenType,
      ...(issued.subject ? { subject: issued.subject } : {}),
      expiresIn: issued.expiresIn,
      audiences: decision.grant.audiences,
      scopes: decision.grant.scopes,
    };
    return { grant: decision.grant, issued };
  }

  /** The policy decision in a span of its own: the rule that decided, and whether it allowed. */
  #decide(request: PolicyRequest): PolicyDecision {
    const span = tracer.startSpan('policy decide');
    try {
      const decision = this.deps.policy.decide(request);
      span.setAttribute('tessera.policy.allowed', decision.allowed);
      if (decision.ruleId !== undefined) span.setAttribute('tessera.policy.rule_id', decision.ruleId);
      if (!decision.allowed) markFailed(span, decision.error.code);
      return decision;
    } catch (error) {
      markFailed(span, errorCode(error));
      throw error;
    } finally {
      span.end();
    }
  }

  /** Everyone the request involves, in one store round trip: the client, the subject, the actor, the whole chain. */
  async #checkKillSwitch(input: ExchangeInput, chain: readonly ChainMember[]): Promise<void> {
    if (!this.deps.killSwitch) return;
    const brokerIssuer = this.deps.broker.issuer;
    const query = new KillSwitchQuery().client(input.client.id).identity(input.subject, brokerIssuer);
    if (input.client.identity) query.identity(input.client.identity, brokerIssuer);
    if (input.actor) query.identity(input.actor, brokerIssuer);
    for (const member of chain) query.member(member);
    const match = await this.deps.killSwitch.match(query);
    if (match) throw new InvalidRequest(REVOKED_PARTY, { detail: `kill switch: ${match.kind} entry` });
  }

  #roleError(error: unknown, role: ValidationRole, tokenType: string): OAuthError {
    let detail: string | undefined;
    if (error instanceof InvalidToken) detail = error.detail;
    else if (error instanceof OAuthError && error.status >= 500) return error; // upstream outage: a real 503
    else if (error instanceof OAuthError) detail = error.detail ?? error.code;
    else if (error instanceof ExtractorFault) detail = 'attribute extractor plugin fault';
    else {
      // A validator that throws anything but an OAuthError has a bug; fail closed without a 5xx.
      this.deps.log.error({ err: error, plugin: this.deps.validators.pluginOf(tokenType), role }, 'validator plugin fault');
      detail = 'validator plugin fault';
    }
    const where = `${role}: ${detail ?? 'invalid'}`;
    if (role === 'subject') return InvalidRequest.subjectToken(where);
    if (role === 'actor') return InvalidRequest.actorToken(where);
    return new InvalidGrant(undefined, { detail: where });
  }
}

/** An extractor failed; already logged with its plugin's name. Refused like a validator fault. */
class ExtractorFault extends Error {}

