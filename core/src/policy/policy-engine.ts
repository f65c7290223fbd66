import {
  InvalidRequest,
  InvalidScope,
  InvalidTarget,
  type AuthenticatedClient,
  type Grant,
  type OAuthError,
  type TokenTypeUrn,
  type VerifiedIdentity,
} from '@tessera/plugin-sdk';
import { ConfigError } from '../config/errors.js';
import type { GrantTypeName, PolicyRuleConfig } from '../config/schema.js';
import type { FrontDoor } from '../oauth/request.js';
import { compilePatternList, type Matcher } from './patterns.js';
import { fillTemplate, templateProblems } from './templates.js';

export interface PolicyRequest {
  readonly grantType: GrantTypeName;
  readonly grantTypeUri: string;
  /** The door the request came through. */
  readonly endpoint: FrontDoor;
  readonly client: AuthenticatedClient;
  readonly subject: VerifiedIdentity;
  readonly actor?: VerifiedIdentity;
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

interface CompiledRule {
  readonly config: PolicyRuleConfig;
  readonly clients?: Matcher;
  readonly issuers?: Matcher;
  readonly subjects?: Matcher;
  readonly audiences: Matcher;
  readonly attributes: readonly (readonly [name: string, matches: Matcher])[];
}

/**
 * Default deny. Rules are tried in config order and the first whose `match` fits the request decides;
 * its `grant` then bounds audiences, scopes and lifetime. A request matching no rule is refused.
 */
export class PolicyEngine {
  readonly #rules: readonly CompiledRule[];

  constructor(rules: readonly PolicyRuleConfig[]) {
    // Defaults outside what a rule allows would be refused on every request: catch them at startup.
    const problems = rules.flatMap((rule, index) => {
      const allowed = compilePatternList(rule.grant.audiences)!;
      return [
        ...rule.grant.defaultAudiences.filter((audience) => !allowed(audience)).map((audience) => `policy.rules[${index}].grant.defaultAudiences: "${audience}" is not in audiences (rule ${rule.id})`),
        ...rule.grant.defaultScopes.filter((scope) => !rule.grant.scopes.includes(scope)).map((scope) => `policy.rules[${index}].grant.defaultScopes: "${scope}" is not in scopes (rule ${rule.id})`),
        ...Object.entries(rule.grant.issuerParameters).flatMap(([name, value]) =>
          [value].flat().flatMap((template) => templateProblems(template).map((problem) => `policy.rules[${index}].grant.issuerParameters.${name}: ${problem} (rule ${rule.id})`)),
        ),
      ];
    });
    if (problems.length > 0) throw new ConfigError(problems);
    this.#rules = rules.map((config) => ({
      config,
      clients: compilePatternList(config.match.clients),
      issuers: compilePatternList(config.match.issuers),
      subjects: compilePatternList(config.match.subjects),
      audiences: compilePatternList(config.grant.audiences)!,
      attributes: Object.entries(config.match.attributes ?? {}).map(([name, patterns]) => [name, compilePatternList(typeof patterns === 'string' ? [patterns] : patterns)!] as const),
    }));
  }

  decide(request: PolicyRequest): PolicyDecision {
    const rule = this.#rules.find((candidate) => this.#matches(candidate, request));
    if (!rule) return { allowed: false, error: InvalidRequest.policy('policy: no_rule_matched'), reason: 'no_rule_matched' };
    const { grant, id } = rule.config;
    const refuse = (error: OAuthError, reason: string): PolicyDecision => ({ allowed: false, error, ruleId: id, reason });
    const detail = (reason: string) => ({ detail: `policy: ${reason} (rule ${id})` });

    const audiences = request.targets.length > 0 ? [...new Set(request.targets)] : grant.defaultAudiences;
    if (audiences.length === 0) return refuse(new InvalidTarget('audience or resource is required', detail('audience_missing')), 'audience_missing');
    if (!audiences.every((audience) => rule.audiences(audience))) return refuse(new InvalidTarget(undefined, detail('audience_not_allowed')), 'audience_not_allowed');

    const scopes = request.scopes === undefined ? grant.defaultScopes : [...new Set(request.scopes)];
    if (!scopes.every((scope) => grant.scopes.includes(scope))) return refuse(new InvalidScope(undefined, detail('scope_not_allowed')), 'scope_not_allowed');

    let lifetime = grant.maxLifetimeSeconds;
    if (!grant.allowLifetimeBeyondSubject) {
      // No widening: the new token dies no later than the one it was exchanged for.
      const remaining = Math.floor((request.subject.expiresAt.getTime() - request.now.getTime()) / 1000);
      lifetime = Math.min(lifetime, remaining);
    }
    if (lifetime <= 0) return refuse(InvalidRequest.subjectToken(detail('subject_expiring').detail), 'subject_expiring');

    const parameters: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(grant.issuerParameters)) {
      const filled = [value].flat().map((template) => fillTemplate(template, { subject: request.subject, client: request.client }));
      // A rule that needs a value this identity lacks cannot be applied to it: refuse, never issue with a hole.
      if (filled.some((item) => item === undefined)) return refuse(InvalidRequest.policy(detail(`parameter_unresolved ${name}`).detail), 'parameter_unresolved');
      parameters[name] = typeof value === 'string' ? filled[0]! : (filled as string[]);
    }

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
      },
    };
  }

  #matches(rule: CompiledRule, request: PolicyRequest): boolean {
    const { match } = rule.config;
    if (rule.clients && !rule.clients(request.client.id)) return false;
    if (match.grantTypes && !match.grantTypes.includes(request.grantType)) return false;
    if (match.endpoints && !match.endpoints.includes(request.endpoint)) return false;
    if (match.subjectTokenTypes && !match.subjectTokenTypes.includes(request.subject.tokenType)) return false;
    if (rule.issuers && !rule.issuers(request.subject.issuer)) return false;
    if (rule.subjects && !rule.subjects(request.subject.subject)) return false;
    if (match.requestedTokenTypes && !match.requestedTokenTypes.includes(request.requestedTokenType)) return false;
    // An absent attribute never matches; a list-valued one matches when any of its values does.
    for (const [name, matches] of rule.attributes) {
      const value = Object.hasOwn(request.subject.attributes, name) ? request.subject.attributes[name] : undefined;
      if (value === undefined || !(typeof value === 'string' ? matches(value) : value.some(matches))) return false;
    }
    return true;
  }
}
