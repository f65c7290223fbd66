import { z } from 'zod';
import { OAuthError, TOKEN_TYPE_ACCESS_TOKEN, type AuthenticatedClient, type TokenTypeUrn, type VerifiedIdentity } from '@tessera/plugin-sdk';
import { GRANT_TYPE_NAMES } from '../config/schema.js';
import type { ChainMember } from '../policy/delegation.js';
import type { ExchangePipeline, ExchangeTrace } from '../oauth/exchange-pipeline.js';
import { checkTargetsAndScope } from '../oauth/parameters.js';
import { FRONT_DOORS } from '../oauth/request.js';
import { GRANT_TYPE_URIS } from '../oauth/token-endpoint.js';
import type { IssuerRegistry } from '../plugins/registry.js';
import type { RuleExplanation } from '../policy/policy-engine.js';

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
  /** The pipeline of the broker the config plans: its `decide` is the one a real request runs. */
  readonly pipeline: ExchangePipeline;
  readonly issuers: IssuerRegistry;
  readonly brokerIssuer: string;
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

/**
 * Runs a described request through the exchange pipeline's own decision (delegation, policy, the grant
 * checks), stopping before anything is issued. Identities stand for tokens validators would have verified.
 */
export async function explainPolicy(input: unknown, context: ExplainContext): Promise<ExplainReport> {
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
  const list = (value: string | string[] | undefined) => (value === undefined ? [] : [value].flat());
  const trace: ExchangeTrace = {};
  const report: { rules?: readonly RuleExplanation[]; readonly now: Date } = { now };
  const refused = (error: OAuthError): ExplainReport => ({
    decision: { allowed: false, error: error.code, reason: error.detail ?? error.code, ...(trace.ruleId ? { ruleId: trace.ruleId } : {}) },
    chain: trace.chain ?? [],
    rules: report.rules ?? [],
  });
  try {
    // The token endpoint refuses unsafe targets and scopes before any rule is tried; so does explain.
    const requested = checkTargetsAndScope(list(request.audience), list(request.resource), request.scope);
    const decision = await context.pipeline.decide(
      {
        grantType: request.grantType,
        grantTypeUri: GRANT_TYPE_URIS[request.grantType],
        endpoint: request.endpoint,
        client,
        subject,
        ...(actor ? { actor } : {}),
        requestedTokenType: request.requestedTokenType,
        audiences: requested.audiences,
        resources: requested.resources,
        scopes: requested.scopes,
      },
      trace,
      report,
    );
    const { grant } = decision;
    const issuerPlugin = context.issuers.pluginOf(grant.tokenType);
    const claims = decision.issuer.preview?.(grant, { brokerIssuer: context.brokerIssuer, now });
    return {
      decision: { allowed: true, ruleId: decision.ruleId },
      chain: trace.chain ?? [],
      rules: report.rules ?? [],
      token: {
        tokenType: grant.tokenType,
        ...(issuerPlugin ? { issuerPlugin } : {}),
        lifetimeSeconds: grant.lifetimeSeconds,
        parameters: grant.parameters,
        ...(claims ? { claims } : {}),
      },
    };
  } catch (error) {
    if (error instanceof OAuthError) return refused(error);
    throw error;
  }
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
