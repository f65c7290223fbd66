import { z } from 'zod';
import { OAuthError, TOKEN_TYPE_ACCESS_TOKEN, type AuthenticatedClient, type TokenTypeUrn, type VerifiedIdentity } from '@tessera/plugin-sdk';
import { GRANT_TYPE_NAMES } from '../config/schema.js';
import { planDelegation, type ChainMember } from '../policy/delegation.js';
import { checkTargetsAndScope, type TargetsAndScope } from '../oauth/parameters.js';
import { FRONT_DOORS } from '../oauth/request.js';
import { unsafeGrantValue } from '../oauth/target-values.js';
import { GRANT_TYPE_URIS } from '../oauth/token-endpoint.js';
import type { IssuerRegistry, ValidatorRegistry } from '../plugins/registry.js';
import type { PolicyEngine, RuleExplanation } from '../policy/policy-engine.js';

const identitySchema = z
  .object({
    issuer: z.string().min(1),
    subject: z.string().min(1),
    tokenType: z.string().regex(/^urn:\S+$/),
    audiences: z.array(z.string()).default([]),
    expiresAt: z.iso.datetime({ offset: true }).optional().describe('Default: one hour after `now`'),
    claims: z.record(z.string(), z.unknown()).default({}),
    attributes: z.record(z.string(), z.union([z.string(), z.array(z.string())])).default({}),
  })
  .strict();

/**
 * A request as policy sees it: identities as validators would have verified them (no tokens, so
 * nothing is contacted), plus the request parameters.
 */
export const explainRequestSchema = z
  .object({
    grantType: z.enum(GRANT_TYPE_NAMES).default('token_exchange'),
    endpoint: z.enum(FRONT_DOORS).default('token'),
    client: z
      .object({
        id: z.string().min(1),
        authMethod: z.enum(['private_key_jwt', 'client_secret_basic', 'client_secret_post', 'spiffe_jwt', 'none']).default('private_key_jwt'),
      })
      .strict(),
    subject: identitySchema,
    actor: identitySchema.optional(),
    requestedTokenType: z.string().regex(/^urn:\S+$/).default(TOKEN_TYPE_ACCESS_TOKEN),
    audience: z.union([z.string(), z.array(z.string())]).optional(),
    resource: z.union([z.string(), z.array(z.string())]).optional(),
    scope: z.string().optional().describe('Space-separated, as in the token request'),
    now: z.iso.datetime({ offset: true }).optional().describe('Default: the current time'),
  })
  .strict();

export type ExplainRequest = z.input<typeof explainRequestSchema>;

export interface ExplainContext {
  readonly policy: PolicyEngine;
  readonly validators: ValidatorRegistry;
  readonly issuers: IssuerRegistry;
  readonly brokerIssuer: string;
  readonly maxChainDepth: number;
}

export interface ExplainReport {
  readonly decision:
    | { readonly allowed: true; readonly ruleId: string }
    | { readonly allowed: false; readonly error: string; readonly reason: string; readonly ruleId?: string };
  /** Chain of the token that would be issued, current actor first. */
  readonly chain: readonly ChainMember[];
  readonly rules: readonly RuleExplanation[];
  /** What the granted token would hold; claims only when the issuer can preview them. */
  readonly token?: {
    readonly tokenType: string;
    readonly issuerPlugin?: string;
    readonly lifetimeSeconds: number;
    readonly parameters: Readonly<Record<string, string | readonly string[]>>;
    readonly claims?: Readonly<Record<string, unknown>>;
  };
}

/** Runs a described request through delegation checks and policy, the way the token endpoint would. */
export function explainPolicy(input: unknown, context: ExplainContext): ExplainReport {
  const request = explainRequestSchema.parse(input);
  const now = request.now ? new Date(request.now) : new Date();
  const subject = identityFrom(request.subject, now);
  const actor = request.actor && identityFrom(request.actor, now);
  const client: AuthenticatedClient = {
    id: request.client.id,
    authMethod: request.client.authMethod,
    // A spiffe_jwt client is the workload its JWT-SVID proved.
    ...(request.client.authMethod === 'spiffe_jwt' ? { identity: spiffeClientIdentity(request.client.id, now) } : {}),
  };
  const actorTrust = actor && context.validators.trustOf(actor.tokenType);
  const subjectTrust = request.grantType !== 'client_credentials' && context.validators.verifiesBrokerTokens(subject.tokenType) ? 'broker' : undefined;
  let chain: readonly ChainMember[] = [];
  try {
    chain = planDelegation(
      {
        client,
        subject,
        ...(subjectTrust ? { subjectTrust } : {}),
        ...(actor ? { actor } : {}),
        ...(actorTrust ? { actorTrust } : {}),
        brokerIssuer: context.brokerIssuer,
        maxChainDepth: context.maxChainDepth,
      },
      (members) => (chain = members),
    ).members;
  } catch (error) {
    if (!(error instanceof OAuthError)) throw error;
    return { decision: { allowed: false, error: error.code, reason: error.detail ?? error.code }, chain, rules: [] };
  }

  const subjectValidator = request.grantType === 'client_credentials' ? undefined : context.validators.pluginOf(subject.tokenType);
  const actorValidator = actor && context.validators.pluginOf(actor.tokenType);
  const list = (value: string | string[] | undefined) => (value === undefined ? [] : [value].flat());
  // The token endpoint refuses unsafe targets and scopes before any rule is tried; so does explain.
  let requested: TargetsAndScope;
  try {
    requested = checkTargetsAndScope(list(request.audience), list(request.resource), request.scope);
  } catch (error) {
    if (!(error instanceof OAuthError)) throw error;
    return { decision: { allowed: false, error: error.code, reason: error.detail ?? error.code }, chain, rules: [] };
  }
  const { decision, rules } = context.policy.explain({
    grantType: request.grantType,
    grantTypeUri: GRANT_TYPE_URIS[request.grantType],
    endpoint: request.endpoint,
    client,
    subject,
    ...(subjectValidator ? { subjectValidator } : {}),
    ...(actor ? { actor } : {}),
    ...(actorValidator ? { actorValidator } : {}),
    ...(actorTrust ? { actorTrust } : {}),
    chain,
    requestedTokenType: request.requestedTokenType as TokenTypeUrn,
    targets: [...requested.audiences, ...requested.resources],
    scopes: requested.scopes,
    now,
  });
  if (!decision.allowed) {
    return {
      decision: { allowed: false, error: decision.error.code, reason: decision.error.detail ?? decision.reason, ...(decision.ruleId ? { ruleId: decision.ruleId } : {}) },
      chain,
      rules,
    };
  }
  const { grant } = decision;
  const unfit = unsafeGrantValue(grant) ?? context.issuers.grantRefusal(grant.tokenType, grant);
  if (unfit) return { decision: { allowed: false, error: 'invalid_request', reason: unfit, ruleId: decision.ruleId }, chain, rules };
  const issuer = context.issuers.get(grant.tokenType);
  const issuerPlugin = context.issuers.pluginOf(grant.tokenType);
  const claims = issuer?.preview?.(grant, { brokerIssuer: context.brokerIssuer, now });
  return {
    decision: { allowed: true, ruleId: decision.ruleId },
    chain,
    rules,
    token: {
      tokenType: grant.tokenType,
      ...(issuerPlugin ? { issuerPlugin } : {}),
      lifetimeSeconds: grant.lifetimeSeconds,
      parameters: grant.parameters,
      ...(claims ? { claims } : {}),
    },
  };
}

/** Human-readable report, one rule per block. */
export function formatExplanation(report: ExplainReport): string {
  const lines: string[] = [];
  if (report.chain.length > 0) {
    lines.push(`delegation chain (current actor first, depth ${report.chain.length}):`);
    for (const member of report.chain) lines.push(`  ${member.sub}${member.iss ? ` (iss ${member.iss})` : ''}`);
  }
  if (report.rules.length > 0) lines.push('rules (config order; the first that matches decides):');
  for (const rule of report.rules) {
    const label = rule.outcome === 'decided' ? 'MATCH    ' : rule.outcome === 'shadowed' ? 'SHADOWED ' : 'no match ';
    lines.push(`  ${label}${rule.id}`);
    for (const reason of rule.reasons) lines.push(`             - ${reason}`);
  }
  const { decision } = report;
  lines.push(
    decision.allowed
      ? `decision: allow (rule ${decision.ruleId})`
      : `decision: deny ${decision.error}: ${decision.reason}${decision.ruleId && !decision.reason.includes(decision.ruleId) ? ` (rule ${decision.ruleId})` : ''}`,
  );
  if (report.token) {
    const { token } = report;
    lines.push(`token: ${token.tokenType}${token.issuerPlugin ? ` from plugin ${token.issuerPlugin}` : ' (no issuer plugin handles it)'}, at most ${token.lifetimeSeconds}s`);
    if (Object.keys(token.parameters).length > 0) lines.push(`issuer parameters: ${JSON.stringify(token.parameters)}`);
    if (token.claims) lines.push('claims (not signed):', ...JSON.stringify(token.claims, null, 2).split('\n').map((line) => `  ${line}`));
  }
  return `${lines.join('\n')}\n`;
}

function identityFrom(described: z.output<typeof identitySchema>, now: Date): VerifiedIdentity {
  return {
    issuer: described.issuer,
    subject: described.subject,
    audiences: described.audiences,
    expiresAt: described.expiresAt ? new Date(described.expiresAt) : new Date(now.getTime() + 3_600_000),
    tokenType: described.tokenType as TokenTypeUrn,
    claims: described.claims,
    attributes: described.attributes,
  };
}

function spiffeClientIdentity(spiffeId: string, now: Date): VerifiedIdentity {
  const trustDomain = /^spiffe:\/\/[^/]+/.exec(spiffeId)?.[0] ?? spiffeId;
  return {
    issuer: trustDomain,
    subject: spiffeId,
    audiences: [],
    expiresAt: new Date(now.getTime() + 300_000),
    tokenType: 'urn:tessera:token-type:client',
    claims: {},
    attributes: {},
  };
}
