import { z } from 'zod';
import {
  definePlugin,
  fetchableUrl,
  InvalidToken,
  JwtVerifier,
  tokens,
  type SubjectValidator,
  type TokenTypeUrn,
  type ValidationContext,
  type VerifiedIdentity,
  type ValidationCaching,
} from '@tessera/plugin-sdk';

/** Tessera's token type for GitHub Actions OIDC tokens (not an IETF type: GitHub defines none). */
export const TOKEN_TYPE_GITHUB_ACTIONS = 'urn:tessera:token-type:github-actions' satisfies TokenTypeUrn;
export const GITHUB_ACTIONS_ISSUER = 'https://token.actions.githubusercontent.com';

/** Claims GitHub documents, exposed to policy as `github.<claim>`. Anything else stays out of policy. */
export const GITHUB_CLAIMS = [
  'repository',
  'repository_id',
  'repository_owner',
  'repository_owner_id',
  'repository_visibility',
  'ref',
  'ref_type',
  'sha',
  'environment',
  'workflow',
  'workflow_ref',
  'job_workflow_ref',
  'run_id',
  'run_attempt',
  'actor',
  'actor_id',
  'event_name',
  'runner_environment',
] as const;

export const githubActionsConfigSchema = z
  .object({
    issuer: z.string().min(1).default(GITHUB_ACTIONS_ISSUER).describe('GitHub.com by default; GHES: https://HOST/_services/token'),
    jwksUri: fetchableUrl.optional().describe('Default: found through OIDC discovery of the issuer'),
    owners: z
      .array(z.string().min(1))
      .min(1)
      .describe('Repository owners (organizations or users) whose workflows may present tokens. Anyone can mint a GitHub token, so this is required'),
    ownerIds: z
      .array(z.string().regex(/^\d+$/, 'must be a numeric GitHub account id'))
      .optional()
      .describe('Also require repository_owner_id to be one of these: names can be renamed and re-registered, ids cannot'),
    allowedAudiences: z.array(z.string().min(1)).default([]).describe('Audiences accepted besides the broker issuer and token endpoint'),
    tokenTypes: z
      .array(z.string().regex(/^urn:\S+$/, 'must be a urn:'))
      .min(1)
      .default([TOKEN_TYPE_GITHUB_ACTIONS])
      .describe('Token type URNs this validator answers for'),
    clockSkewSeconds: z.number().int().min(0).max(300).default(60),
  })
  .strict();

export type GithubActionsConfig = z.output<typeof githubActionsConfigSchema>;

/** Verifies GitHub Actions OIDC tokens and exposes their workflow claims as `github.*` attributes. */
export class GithubActionsValidator implements SubjectValidator {
  readonly tokenTypes: readonly TokenTypeUrn[];
  readonly clockSkewSeconds: number;
  /** Verification is a pure function of the token and the issuer's keys: core may reuse it. */
  readonly caching: ValidationCaching = {};
  readonly #owners: ReadonlySet<string>;
  readonly #ownerIds: ReadonlySet<string> | undefined;

  constructor(
    config: GithubActionsConfig,
    private readonly verifier: JwtVerifier,
  ) {
    this.tokenTypes = config.tokenTypes as TokenTypeUrn[];
    this.clockSkewSeconds = verifier.maxClockSkewSeconds;
    // GitHub owner names are case-insensitive.
    this.#owners = new Set(config.owners.map((owner) => owner.toLowerCase()));
    this.#ownerIds = config.ownerIds ? new Set(config.ownerIds) : undefined;
  }

  async validate(token: string, ctx: ValidationContext): Promise<VerifiedIdentity> {
    const { identity, payload } = await this.verifier.verify(token, ctx);
    const owner = payload.repository_owner;
    if (typeof owner !== 'string' || !this.#owners.has(owner.toLowerCase())) throw new InvalidToken('claims', 'repository_owner not allowed');
    if (this.#ownerIds && !this.#ownerIds.has(String(payload.repository_owner_id))) throw new InvalidToken('claims', 'repository_owner_id not allowed');
    if (typeof payload.repository !== 'string') throw new InvalidToken('claims', 'repository');
    return identity;
  }
}

export default definePlugin({
  name: 'github-actions',
  version: '0.1.0',
  apiVersion: '^1',
  description: 'Validates GitHub Actions OIDC tokens; policy can match github.repository, github.ref, github.environment...',
  config: githubActionsConfigSchema,
  deps: { jwks: tokens.jwksCache, http: tokens.httpFetcher, log: tokens.logger },
  async init({ config, deps }) {
    const verifier = new JwtVerifier(
      {
        issuers: [
          {
            issuer: config.issuer,
            ...(config.jwksUri ? { jwksUri: config.jwksUri } : {}),
            allowedAudiences: config.allowedAudiences,
            algorithms: ['RS256'],
            clockSkewSeconds: config.clockSkewSeconds,
            // GitHub's tokens live minutes; anything claiming a day is not one of them.
            maxTokenLifetimeSeconds: 3_600,
            attributes: Object.fromEntries(GITHUB_CLAIMS.map((claim) => [`github.${claim}`, claim])),
          },
        ],
      },
      deps,
    );
    const [warmed] = await verifier.warm();
    if (!warmed?.ok) deps.log.warn({ plugin: 'github-actions', issuer: config.issuer, reason: warmed?.reason }, 'GitHub OIDC keys not reachable at startup; will retry on first token');
    return { validators: [new GithubActionsValidator(config, verifier)] };
  },
});
