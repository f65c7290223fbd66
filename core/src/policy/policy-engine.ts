import {
  InvalidRequest,
  InvalidScope,
  InvalidTarget,
  TOKEN_TYPE_ACCESS_TOKEN,
  type ActorTrust,
  type AuthenticatedClient,
  type Grant,
  type OAuthError,
  type TokenTypeUrn,
  type VerifiedIdentity,
} from '@tessera/plugin-sdk';
import { ConfigError } from '../config/errors.js';
import type { GrantTypeName, PolicyRuleConfig } from '../config/schema.js';
import { toActClaim, type ChainMember } from './delegation.js';
import type { FrontDoor } from '../oauth/request.js';
import { ConditionCompileError, PolicyCondition, type ConditionIdentity, type ConditionInput } from './conditions.js';
import { compilePatternList, type Matcher } from './patterns.js';
import { fillTemplate, templateProblems } from './templates.js';

export interface PolicyRequest {
  readonly grantType: GrantTypeName;
  readonly grantTypeUri: string;
  /** The door the request came through. */
  readonly endpoint: FrontDoor;
  readonly client: AuthenticatedClient;
  readonly subject: VerifiedIdentity;
  /** Plugin whose validator verified the subject (absent for a client acting for itself). */
  readonly subjectValidator?: string;
  /** The current actor (delegation), already admitted as trusted. */
  readonly actor?: VerifiedIdentity;
  readonly actorValidator?: string;
  readonly actorTrust?: ActorTrust;
  /** The chain the issued token would record, current actor first (empty for plain impersonation). */
  readonly chain: readonly ChainMember[];
  readonly requestedTokenType: TokenTypeUrn;
  /** `audience` and `resource` values together: both name where the token will be used. */
  readonly targets: readonly string[];
  /** Undefined when the request carried no `scope` parameter. */
  readonly scopes: readonly string[] | undefined;
  readonly now: Date;
}

export type PolicyDecision =
  | { readonly allowed: true; readonly grant: Grant; readonly ruleId: string }
  | { readonly allowed: false; readonly error: OAuthError; readonly ruleId?: string; readonly reason: string };

/** How one rule related to a request, for `tessera policy explain`. */
export interface RuleExplanation {
  readonly id: string;
  /** `decided`: first match, its grant decided; `shadowed`: would match, but an earlier rule decided; `no_match`. */
  readonly outcome: 'decided' | 'shadowed' | 'no_match';
  /** Why the rule does not apply (every reason, not only the first). */
  readonly reasons: readonly string[];
}

export interface PolicyExplanation {
  readonly decision: PolicyDecision;
  readonly rules: readonly RuleExplanation[];
}

interface CompiledRule {
  readonly config: PolicyRuleConfig;
  readonly clients?: Matcher;
  readonly issuers?: Matcher;
  readonly subjects?: Matcher;
  readonly targets?: Matcher;
  readonly actorIssuers?: Matcher;
  readonly actorSubjects?: Matcher;
  readonly priorActors?: Matcher;
  readonly attributes: readonly (readonly [name: string, matches: Matcher])[];
  readonly condition?: PolicyCondition;
  readonly audiences: Matcher;
}

/**
 * Default deny. Rules are tried in config order and the first whose `match` fits the request decides;
 * its `grant` then bounds audiences, scopes, lifetime and claims, and a request outside those bounds is
 * refused (later rules are not consulted). A request matching no rule is refused.
 *
 * Nothing widens along a chain: scopes stay within the subject token's own scopes, and the lifetime
 * within the subject's and the actor's unless the rule says otherwise.
 */
export class PolicyEngine {
  readonly #rules: readonly CompiledRule[];
  readonly #brokerIssuer: string | undefined;

  /**
   * `brokerIssuer`: this broker's issuer, whose own access tokens state every scope they hold, and which
   * is an audience only where a rule names it. `conditionTimeoutMs`: the bound on each `match.when`.
   */
  constructor(rules: readonly PolicyRuleConfig[], options: { readonly brokerIssuer?: string; readonly conditionTimeoutMs?: number } = {}) {
    this.#brokerIssuer = options.brokerIssuer;
    const problems: string[] = [];
    this.#rules = rules.map((config, index) => {
      const at = (path: string) => `policy.rules[${index}].${path}`;
      const where = ` (rule ${config.id})`;
      const { grant, match } = config;
      const audiences = compilePatternList(grant.audiences)!;
      // Defaults outside what a rule allows would be refused on every request: catch them at startup.
      for (const audience of grant.defaultAudiences) if (!audiences(audience)) problems.push(`${at('grant.defaultAudiences')}: "${audience}" is not in audiences${where}`);
      for (const scope of grant.defaultScopes) if (!grant.scopes.includes(scope)) problems.push(`${at('grant.defaultScopes')}: "${scope}" is not in scopes${where}`);
      for (const [name, value] of Object.entries(grant.issuerParameters)) {
        for (const template of [value].flat()) problems.push(...templateProblems(template).map((problem) => `${at(`grant.issuerParameters.${name}`)}: ${problem}${where}`));
      }
      for (const [name, template] of Object.entries(grant.claims.set)) {
        problems.push(...templateProblems(template).map((problem) => `${at(`grant.claims.set.${name}`)}: ${problem}${where}`));
        if (grant.claims.copy.includes(name)) problems.push(`${at(`grant.claims.set.${name}`)}: also listed in claims.copy${where}`);
      }
      if (match.actor && !grant.delegation.allowed) problems.push(`${at('match.actor')}: matches actors, but grant.delegation.allowed is false${where}`);
      let condition: PolicyCondition | undefined;
      if (match.when !== undefined) {
        try {
          condition = PolicyCondition.compile(match.when, options.conditionTimeoutMs === undefined ? {} : { timeoutMs: options.conditionTimeoutMs });
        } catch (error) {
          if (!(error instanceof ConditionCompileError)) throw error;
          problems.push(`${at('match.when')}: ${error.message}${where}`);
        }
      }
      return {
        config,
        clients: compilePatternList(match.clients),
        issuers: compilePatternList(match.issuers),
        subjects: compilePatternList(match.subjects),
        targets: compilePatternList(match.audiences),
        actorIssuers: compilePatternList(match.actor?.issuers),
        actorSubjects: compilePatternList(match.actor?.subjects),
        priorActors: compilePatternList(match.actor?.priorActors),
        attributes: Object.entries(match.attributes ?? {}).map(([name, patterns]) => [name, compilePatternList(typeof patterns === 'string' ? [patterns] : patterns)!] as const),
        ...(condition ? { condition } : {}),
        audiences,
      };
    });
    if (problems.length > 0) throw new ConfigError(problems);
  }

  decide(request: PolicyRequest): PolicyDecision {
    const rule = this.#rules.find((candidate) => this.#mismatches(candidate, request, false).length === 0);
    return rule ? this.#grant(rule, request) : noRuleMatched();
  }

  /** Evaluates every rule (not only up to the first match) and says why each one does or does not apply. */
  explain(request: PolicyRequest): PolicyExplanation {
    let decided: CompiledRule | undefined;
    const rules = this.#rules.map((rule): RuleExplanation => {
      const reasons = this.#mismatches(rule, request, true);
      if (reasons.length > 0) return { id: rule.config.id, outcome: 'no_match', reasons };
      if (decided) return { id: rule.config.id, outcome: 'shadowed', reasons: [`an earlier rule decided (${decided.config.id})`] };
      decided = rule;
      return { id: rule.config.id, outcome: 'decided', reasons: [] };
    });
    return { decision: decided ? this.#grant(decided, request) : noRuleMatched(), rules };
  }

  /** Applies a matched rule's grant: every bound that the request exceeds refuses it. */
  #grant(rule: CompiledRule, request: PolicyRequest): PolicyDecision {
    const { grant, id } = rule.config;
    const refuse = (error: OAuthError, reason: string): PolicyDecision => ({ allowed: false, error, ruleId: id, reason });
    const detail = (reason: string) => ({ detail: `policy: ${reason} (rule ${id})` });

    if (request.actor && grant.delegation.actorMustBeClient && !actorIsClient(request.actor, request.client)) {
      return refuse(InvalidRequest.policy(detail('actor_not_client').detail), 'actor_not_client');
    }

    const audiences = request.targets.length > 0 ? [...new Set(request.targets)] : grant.defaultAudiences;
    if (audiences.length === 0) return refuse(new InvalidTarget('audience or resource is required', detail('audience_missing')), 'audience_missing');
    if (!audiences.every((audience) => rule.audiences(audience))) return refuse(new InvalidTarget(undefined, detail('audience_not_allowed')), 'audience_not_allowed');
    // A token for the broker itself would be a broker-wide credential: only a rule naming it literally grants one.
    if (audiences.some((audience) => this.#isBroker(audience) && !grant.audiences.includes(audience))) {
      return refuse(new InvalidTarget(undefined, detail('audience_is_broker')), 'audience_is_broker');
    }

    const held = heldScopes(request.subject, this.#brokerIssuer);
    if (held === 'malformed') return refuse(InvalidRequest.subjectToken(detail('subject_scope_malformed').detail), 'subject_scope_malformed');
    let scopes: readonly string[];
    if (request.scopes === undefined) {
      // Defaults are the broker's choice: narrow them to what the subject holds instead of refusing.
      scopes = held ? grant.defaultScopes.filter((scope) => held.has(scope)) : grant.defaultScopes;
    } else {
      scopes = [...new Set(request.scopes)];
      if (!scopes.every((scope) => grant.scopes.includes(scope))) return refuse(new InvalidScope(undefined, detail('scope_not_allowed')), 'scope_not_allowed');
      if (held && !scopes.every((scope) => held.has(scope))) return refuse(new InvalidScope(undefined, detail('scope_exceeds_subject')), 'scope_exceeds_subject');
    }

    let lifetime = grant.maxLifetimeSeconds;
    if (!grant.allowLifetimeBeyondSubject) {
      // No widening: the new token dies no later than the subject token, nor than the actor's proof.
      for (const bound of [request.subject, request.actor]) {
        if (bound) lifetime = Math.min(lifetime, Math.floor((bound.expiresAt.getTime() - request.now.getTime()) / 1000));
      }
    }
    if (lifetime <= 0) return refuse(InvalidRequest.subjectToken(detail('subject_expiring').detail), 'subject_expiring');

    const source = { subject: request.subject, client: request.client };
    const parameters: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(grant.issuerParameters)) {
      const filled = [value].flat().map((template) => fillTemplate(template, source));
      // A rule that needs a value this identity lacks cannot be applied to it: refuse, never issue with a hole.
      if (filled.some((item) => item === undefined)) return refuse(InvalidRequest.policy(detail(`parameter_unresolved ${name}`).detail), 'parameter_unresolved');
      parameters[name] = typeof value === 'string' ? filled[0]! : (filled as string[]);
    }

    const claims: Record<string, unknown> = {};
    for (const name of grant.claims.copy) if (Object.hasOwn(request.subject.claims, name)) claims[name] = request.subject.claims[name];
    for (const [name, template] of Object.entries(grant.claims.set)) {
      const value = fillTemplate(template, source);
      if (value === undefined) return refuse(InvalidRequest.policy(detail(`claim_unresolved ${name}`).detail), 'claim_unresolved');
      claims[name] = value;
    }

    const act = toActClaim(request.chain);
    return {
      allowed: true,
      ruleId: id,
      grant: {
        grantType: request.grantTypeUri,
        client: request.client,
        subject: request.subject,
        ...(request.actor ? { actor: request.actor } : {}),
        audiences,
        scopes,
        lifetimeSeconds: lifetime,
        tokenType: request.requestedTokenType,
        ruleId: id,
        parameters,
        ...(act ? { act } : {}),
        ...(Object.keys(claims).length > 0 ? { claims } : {}),
      },
    };
  }

  #isBroker(audience: string): boolean {
    if (this.#brokerIssuer === undefined) return false;
    const base = this.#brokerIssuer.replace(/\/$/, '');
    return audience === this.#brokerIssuer || audience === base || audience === `${base}/token`;
  }

  /** Why `rule` does not apply; empty when it does. Stops at the first reason unless `all`. */
  #mismatches(rule: CompiledRule, request: PolicyRequest, all: boolean): string[] {
    const { match } = rule.config;
    const reasons: string[] = [];
    const check = (fits: boolean, reason: () => string): boolean => {
      if (!fits) reasons.push(reason());
      return fits || all;
    };
    const go =
      check(!rule.clients || rule.clients(request.client.id), () => `client "${request.client.id}" is not in match.clients`) &&
      check(!match.grantTypes || match.grantTypes.includes(request.grantType), () => `grant type ${request.grantType} is not in match.grantTypes`) &&
      check(!match.endpoints || match.endpoints.includes(request.endpoint), () => `endpoint ${request.endpoint} is not in match.endpoints`) &&
      check(!match.subjectTokenTypes || match.subjectTokenTypes.includes(request.subject.tokenType), () => `subject token type ${request.subject.tokenType} is not in match.subjectTokenTypes`) &&
      check(!match.validators || (request.subjectValidator !== undefined && match.validators.includes(request.subjectValidator)), () => `subject validator "${request.subjectValidator ?? 'none'}" is not in match.validators`) &&
      check(!rule.issuers || rule.issuers(request.subject.issuer), () => `subject issuer "${request.subject.issuer}" is not in match.issuers`) &&
      check(!rule.subjects || rule.subjects(request.subject.subject), () => `subject "${request.subject.subject}" is not in match.subjects`) &&
      check(!match.requestedTokenTypes || match.requestedTokenTypes.includes(request.requestedTokenType), () => `requested token type ${request.requestedTokenType} is not in match.requestedTokenTypes`) &&
      check(!rule.targets || (request.targets.length > 0 && request.targets.every(rule.targets)), () =>
        request.targets.length === 0 ? 'the request names no audience (match.audiences)' : 'a requested audience is not in match.audiences',
      ) &&
      this.#attributeMismatches(rule, request, check) &&
      this.#actorMismatches(rule, request, check);
    if (!go || !rule.condition || (!all && reasons.length > 0)) return reasons;
    // The condition runs last: it is the most expensive check.
    const result = rule.condition.evaluate(conditionInput(request));
    if (!result.ok) reasons.push(`match.when failed: ${result.error}`);
    else if (!result.value) reasons.push('match.when is false');
    return reasons;
  }

  #attributeMismatches(rule: CompiledRule, request: PolicyRequest, check: (fits: boolean, reason: () => string) => boolean): boolean {
    // An absent attribute never matches; a list-valued one matches when any of its values does.
    for (const [name, matches] of rule.attributes) {
      const value = Object.hasOwn(request.subject.attributes, name) ? request.subject.attributes[name] : undefined;
      const fits = value !== undefined && (typeof value === 'string' ? matches(value) : value.some(matches));
      if (!check(fits, () => (value === undefined ? `subject has no attribute ${name}` : `attribute ${name} does not match match.attributes`))) return false;
    }
    return true;
  }

  #actorMismatches(rule: CompiledRule, request: PolicyRequest, check: (fits: boolean, reason: () => string) => boolean): boolean {
    const { match, grant } = rule.config;
    const { actor } = request;
    if (!actor) return check(!match.actor, () => 'no actor token: rule applies to delegation only (match.actor)');
    if (!check(grant.delegation.allowed, () => 'actor token present: rule allows impersonation only (grant.delegation.allowed is false)')) return false;
    const spec = match.actor;
    if (!spec) return true;
    const prior = request.chain.slice(1);
    return (
      check(!spec.trust || (request.actorTrust !== undefined && spec.trust.includes(request.actorTrust)), () => `actor trust ${request.actorTrust ?? 'none'} is not in match.actor.trust`) &&
      check(!rule.actorIssuers || rule.actorIssuers(actor.issuer), () => `actor issuer "${actor.issuer}" is not in match.actor.issuers`) &&
      check(!rule.actorSubjects || rule.actorSubjects(actor.subject), () => `actor "${actor.subject}" is not in match.actor.subjects`) &&
      check(!rule.priorActors || prior.every((member) => rule.priorActors!(member.sub)), () => 'an earlier actor in the chain is not in match.actor.priorActors') &&
      check(spec.maxDepth === undefined || request.chain.length <= spec.maxDepth, () => `chain depth ${request.chain.length} exceeds match.actor.maxDepth ${spec.maxDepth}`)
    );
  }
}

function noRuleMatched(): PolicyDecision {
  return { allowed: false, error: InvalidRequest.policy('policy: no_rule_matched'), reason: 'no_rule_matched' };
}

/** The actor is the client that presented it: same SPIFFE ID (and trust domain), or same client id. */
function actorIsClient(actor: VerifiedIdentity, client: AuthenticatedClient): boolean {
  if (client.identity) return actor.subject === client.identity.subject && actor.issuer === client.identity.issuer;
  return actor.subject === client.id;
}

/**
 * Scopes the subject token itself holds (`scope`, RFC 8693 §4.2 / RFC 9068; or `scp`): undefined when it
 * states none, `malformed` when the claim is there but unusable (refused rather than ignored).
 */
function heldScopes(subject: VerifiedIdentity, brokerIssuer: string | undefined): ReadonlySet<string> | undefined | 'malformed' {
  const { scope, scp } = subject.claims;
  if (scope === undefined && scp === undefined) {
    // The broker omits `scope` when it granted none: its own token without one holds nothing, and
    // exchanging it must not reopen what policy allows.
    return subject.issuer === brokerIssuer && subject.tokenType === TOKEN_TYPE_ACCESS_TOKEN ? new Set() : undefined;
  }
  // `scope` (RFC 8693 §4.2, RFC 9068) wins; `scp` is read only when there is no `scope`, never merged.
  const claim = scope ?? scp;
  if (typeof claim === 'string') return new Set(claim.split(' ').filter(Boolean));
  if (Array.isArray(claim) && claim.every((item) => typeof item === 'string')) return new Set(claim as string[]);
  return 'malformed';
}

function conditionIdentity(identity: VerifiedIdentity | undefined, validator: string | undefined): ConditionIdentity {
  return {
    issuer: identity?.issuer ?? '',
    subject: identity?.subject ?? '',
    tokenType: identity?.tokenType ?? '',
    validator: validator ?? '',
    audiences: identity?.audiences ?? [],
    expiresAt: identity?.expiresAt ?? new Date(0),
    attributes: identity?.attributes ?? {},
    claims: identity?.claims ?? {},
  };
}

function conditionInput(request: PolicyRequest): ConditionInput {
  return {
    client: { id: request.client.id, authMethod: request.client.authMethod, spiffeId: request.client.authMethod === 'spiffe_jwt' ? (request.client.identity?.subject ?? '') : '' },
    subject: conditionIdentity(request.subject, request.subjectValidator),
    actor: { ...conditionIdentity(request.actor, request.actorValidator), present: request.actor !== undefined },
    request: {
      grantType: request.grantType,
      endpoint: request.endpoint,
      requestedTokenType: request.requestedTokenType,
      audiences: request.targets,
      scopes: request.scopes ?? [],
      chain: request.chain.map((member) => ({ sub: member.sub, iss: member.iss ?? '', spiffe_id: member.spiffe_id ?? '' })),
      chainDepth: request.chain.length,
      now: request.now,
    },
  };
}
