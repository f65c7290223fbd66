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
import type { JWTPayload } from 'jose';
import { compileEmailPatterns, type Matcher } from './email-pattern.js';

/** Tessera's token type for Google-signed ID tokens of GCP workloads (Google defines no URN for them). */
export const TOKEN_TYPE_GCP_ID_TOKEN = 'urn:tessera:token-type:gcp-id-token' satisfies TokenTypeUrn;
/** The name Starfly clients use for the same token: accepted as an alias. */
export const TOKEN_TYPE_STARFLY_GCP_WIF = 'urn:starfly:token-type:gcp-wif' satisfies TokenTypeUrn;

/**
 * Both spellings Google uses in `iss`; Google's own libraries accept exactly these two. Each is a
 * separate exact issuer; neither is derived from the other by normalisation.
 */
export const GOOGLE_ISSUERS = ['https://accounts.google.com', 'accounts.google.com'] as const;
/** Google's signing keys for ID tokens, as a JWKS (the `jwks_uri` of Google's discovery document). */
export const GOOGLE_JWKS_URI = 'https://www.googleapis.com/oauth2/v3/certs';

/**
 * Policy attributes and where they come from. `google.compute_engine` is only present in tokens from
 * Compute Engine requested with `format=full`; its attributes are simply absent otherwise.
 */
export const GCP_ATTRIBUTES = {
  'gcp.email': 'email',
  'gcp.sub': 'sub',
  'gcp.projectId': '/google/compute_engine/project_id',
  'gcp.projectNumber': '/google/compute_engine/project_number',
  'gcp.zone': '/google/compute_engine/zone',
  'gcp.instanceId': '/google/compute_engine/instance_id',
  'gcp.instanceName': '/google/compute_engine/instance_name',
} as const;

// Google ID tokens live one hour (exp - iat = 3600); anything longer is not one of them.
const MAX_TOKEN_LIFETIME_SECONDS = 3_600;

const projectRef = z
  .string()
  .regex(
    /^(?:(?:[a-z][a-z0-9.-]*:)?[a-z][a-z0-9-]{4,28}[a-z0-9]|[1-9][0-9]{0,19})$/,
    'must be a project id (my-project) or a project number (123456789012)',
  );

const serviceAccountPattern = z
  .string()
  .regex(/^[^@\s]+@[^@\s]+$/, 'must be an email or email pattern, e.g. *@my-project.iam.gserviceaccount.com')
  // A pattern such as `*@*.com` would admit any Google account whose email ends in .com: the domain must
  // end in two literal labels, so every pattern names the domain it trusts.
  .refine((pattern) => {
    const labels = pattern.slice(pattern.indexOf('@') + 1).split('.');
    return labels.length >= 2 && labels.slice(-2).every((label) => label !== '' && !label.includes('*'));
  }, 'the domain must end in two labels without wildcards (e.g. iam.gserviceaccount.com)')
  // gserviceaccount.com is shared by every Google Cloud project, like a public suffix: the project (or,
  // for Google-managed accounts under one shared domain, the whole account) must be written out.
  .refine((pattern) => {
    const [local = '', domain = ''] = pattern.split('@');
    if (!domain.endsWith('gserviceaccount.com')) return true;
    if (domain === 'iam.gserviceaccount.com' || /^[^.*]+\.iam\.gserviceaccount\.com$/.test(domain)) return domain !== 'iam.gserviceaccount.com';
    // developer., appspot., cloudservices.gserviceaccount.com hold accounts of every project.
    return !local.includes('*') && !domain.includes('*');
  }, 'under gserviceaccount.com the project must be literal (*@my-project.iam.gserviceaccount.com); shared domains need the whole account written out');

export const gcpConfigSchema = z
  .object({
    projects: z
      .array(projectRef)
      .min(1)
      .optional()
      .describe(
        'Compute Engine projects (ids or numbers) whose VMs may present tokens: matched against google.compute_engine.project_id / project_number, so tokens without them (off Compute Engine, or not format=full) are refused',
      ),
    serviceAccounts: z
      .array(serviceAccountPattern)
      .min(1)
      .optional()
      .describe(
        'Service account emails allowed to present tokens, case-insensitive; `*` matches within one dot-separated label, `**` across labels, neither crosses the @ (e.g. *@my-project.iam.gserviceaccount.com)',
      ),
    issuers: z
      .array(z.string().min(1))
      .min(1)
      .default([...GOOGLE_ISSUERS])
      .refine((list) => new Set(list).size === list.length, 'issuer listed twice')
      .describe('Exact `iss` values accepted, all verified with jwksUri. The first one is the issuer of the resulting identity. Change only for tests'),
    jwksUri: fetchableUrl.default(GOOGLE_JWKS_URI).describe("Google's JWKS. Change only for tests"),
    allowedAudiences: z
      .array(z.string().min(1))
      .default([])
      .describe('Audiences accepted besides the broker issuer and token endpoint. Anyone can get a Google ID token for any audience, so keep these specific to this broker'),
    tokenTypes: z
      .array(z.string().regex(/^urn:\S+$/, 'must be a urn:'))
      .min(1)
      .default([TOKEN_TYPE_GCP_ID_TOKEN, TOKEN_TYPE_STARFLY_GCP_WIF])
      .describe('Token type URNs this validator answers for'),
    clockSkewSeconds: z.number().int().min(0).max(60).default(60).describe('Tolerance for exp, nbf and iat'),
  })
  .strict()
  // Anyone with a Google account can mint a Google-signed ID token naming this broker: without an
  // allow-list, "any Google token" would be accepted.
  .refine((config) => config.projects !== undefined || config.serviceAccounts !== undefined, {
    message: 'set projects or serviceAccounts (or both): without an allow-list any Google account could present a token',
    path: ['projects'],
  });

export type GcpConfig = z.output<typeof gcpConfigSchema>;

/**
 * Verifies Google-signed ID tokens of GCP workloads. Each configured allow-list must admit the token:
 * `projects` checks the VM's project, `serviceAccounts` the account's email.
 *
 * The identity's subject is `sub`, the service account's unique numeric id, not its email: a deleted
 * account's email can be reused by a new account, its unique id never is.
 */
export class GcpValidator implements SubjectValidator {
  readonly tokenTypes: readonly TokenTypeUrn[];
  readonly clockSkewSeconds: number;
  /** Verification is a pure function of the token and the issuer's keys: core may reuse it. */
  readonly caching: ValidationCaching = {};
  readonly #issuer: string;
  readonly #projects: ReadonlySet<string> | undefined;
  readonly #serviceAccounts: Matcher | undefined;

  constructor(
    config: GcpConfig,
    private readonly verifier: JwtVerifier,
  ) {
    this.tokenTypes = config.tokenTypes as TokenTypeUrn[];
    this.clockSkewSeconds = verifier.maxClockSkewSeconds;
    this.#issuer = config.issuers[0]!;
    this.#projects = config.projects ? new Set(config.projects) : undefined;
    this.#serviceAccounts = config.serviceAccounts ? compileEmailPatterns(config.serviceAccounts) : undefined;
  }

  async validate(token: string, ctx: ValidationContext): Promise<VerifiedIdentity> {
    const { identity, payload } = await this.verifier.verify(token, ctx);
    if (!/^[0-9]{1,64}$/.test(identity.subject)) throw new InvalidToken('claims', 'sub is not a numeric Google account id');
    // The email is only Google's word once Google says it verified it.
    if (payload.email_verified !== true) throw new InvalidToken('claims', 'email_verified is not true');
    if (typeof payload.email !== 'string' || payload.email === '') throw new InvalidToken('claims', 'email');
    if (this.#serviceAccounts && !this.#serviceAccounts(payload.email)) throw new InvalidToken('claims', 'email not allowed');
    if (this.#projects) {
      const project = computeEngineProject(payload);
      if (!project) throw new InvalidToken('claims', 'google.compute_engine project absent');
      if (!this.#projects.has(project.id) && !this.#projects.has(project.number)) throw new InvalidToken('claims', 'project not allowed');
    }
    // Both spellings of Google's issuer name one identity: policy and issued tokens see a single issuer.
    return { ...identity, issuer: this.#issuer };
  }
}

/** The VM's project from `google.compute_engine` (format=full); both id and number must be present. */
function computeEngineProject(payload: JWTPayload): { id: string; number: string } | undefined {
  const google = payload.google;
  if (typeof google !== 'object' || google === null || !Object.hasOwn(google, 'compute_engine')) return undefined;
  const gce = (google as Record<string, unknown>).compute_engine;
  if (typeof gce !== 'object' || gce === null) return undefined;
  const { project_id: id, project_number: number } = gce as Record<string, unknown>;
  if (typeof id !== 'string' || id === '') return undefined;
  // Google sends the number as a JSON number; a string of digits is accepted too.
  if (typeof number === 'number' && Number.isSafeInteger(number) && number > 0) return { id, number: String(number) };
  if (typeof number === 'string' && /^[1-9][0-9]{0,19}$/.test(number)) return { id, number };
  return undefined;
}

export default definePlugin({
  name: 'gcp',
  version: '0.1.0',
  apiVersion: '^1',
  description: 'Validates Google-signed ID tokens of GCP workloads; policy can match gcp.email, gcp.projectId, gcp.instanceId...',
  config: gcpConfigSchema,
  deps: { jwks: tokens.jwksCache, http: tokens.httpFetcher, log: tokens.logger },
  async init({ config, deps }) {
    const verifier = new JwtVerifier(
      {
        // One JWKS for both spellings: they are the same issuer, Google, under two names.
        issuers: config.issuers.map((issuer) => ({
          issuer,
          jwksUri: config.jwksUri,
          allowedAudiences: config.allowedAudiences,
          algorithms: ['RS256' as const],
          clockSkewSeconds: config.clockSkewSeconds,
          maxTokenLifetimeSeconds: MAX_TOKEN_LIFETIME_SECONDS,
          attributes: GCP_ATTRIBUTES,
        })),
      },
      deps,
    );
    const failed = (await verifier.warm()).find((result) => !result.ok);
    if (failed) deps.log.warn({ plugin: 'gcp', jwksUri: config.jwksUri, reason: failed.reason }, 'Google keys not reachable at startup; will retry on first token');
    return { validators: [new GcpValidator(config, verifier)] };
  },
});
