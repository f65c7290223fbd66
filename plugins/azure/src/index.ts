import { z } from 'zod';
import {
  decodeUnverifiedJwt,
  definePlugin,
  fetchableUrl,
  InvalidToken,
  JwtVerifier,
  OAuthError,
  tokens,
  type JwtVerifierDeps,
  type SubjectValidator,
  type TokenTypeUrn,
  type ValidationContext,
  type VerifiedIdentity,
  type ValidationCaching,
} from '@tessera/plugin-sdk';
import { compileResourceIdPattern, parseResourceId, type Matcher } from './resource-id.js';
import { TenantDiscovery, tenantEndpoints, type TenantEndpoint } from './tenant-discovery.js';

/** Tessera's token type for Microsoft Entra access tokens of Azure managed identities. */
export const TOKEN_TYPE_AZURE_MI = 'urn:tessera:token-type:azure-mi' satisfies TokenTypeUrn;
/** The name Starfly clients use for the same token: accepted as an alias. */
export const TOKEN_TYPE_STARFLY_AZURE_MI = 'urn:starfly:token-type:azure-mi' satisfies TokenTypeUrn;

export const ENTRA_AUTHORITY = 'https://login.microsoftonline.com';
/** Host of v1.0 access token issuers (`https://sts.windows.net/{tid}/`). */
export const ENTRA_V1_ISSUER_BASE = 'https://sts.windows.net';

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// Entra emits lowercase GUIDs; config is lowercased so tokens can be compared exactly.
const guid = z
  .string()
  .regex(GUID, 'must be a GUID')
  .transform((value) => value.toLowerCase());
const baseUrl = (schema: z.ZodType<string>) => schema.transform((value) => value.replace(/\/+$/, ''));
const MAX_TOKEN_BYTES = 16_384;

export const azureConfigSchema = z
  .object({
    tenants: z
      .array(guid)
      .min(1)
      .describe('Directory (tenant) ids whose identities may present tokens. Each gets its own exact issuers and keys; there is no multi-tenant mode'),
    audiences: z
      .array(z.string().min(1))
      .min(1)
      .describe(
        "The `aud` of Tessera's app registration, compared exactly: its client id (always the aud of v2.0 tokens) and/or the Application ID URIs callers pass as `resource` (v1.0 tokens carry whichever was asked for, with or without a trailing slash)",
      ),
    tokenVersions: z
      .array(z.enum(['1.0', '2.0']))
      .min(1)
      .default(['1.0', '2.0'])
      .describe("Access token versions accepted: the app registration's accessTokenAcceptedVersion decides which one Entra issues (unset or 1: v1.0)"),
    objectIds: z.array(guid).min(1).optional().describe('Only these identities (oid: object id of the managed identity service principal) may present tokens'),
    resourceIds: z
      .array(z.string().regex(/^\/subscriptions\/[^/]+\//i, 'must be a resource id pattern starting /subscriptions/<id>/'))
      .min(1)
      .optional()
      .describe('Only identities whose xms_mirid matches one of these patterns, case-insensitive; `*` within one segment, `**` across segments'),
    requireIdtyp: z
      .boolean()
      .default(false)
      .describe('Require idtyp = app. Enable once the app registration emits the idtyp optional claim (only then does Entra include it)'),
    requireCertificateClient: z
      .boolean()
      .default(true)
      .describe('Require appidacr (v1.0) / azpacr (v2.0) = 2, the certificate authentication managed identities use; refuses service principals signing in with a secret'),
    authority: baseUrl(fetchableUrl).default(ENTRA_AUTHORITY).describe('Entra authority (sovereign clouds use other hosts). Discovery and keys are fetched here'),
    v1IssuerBase: baseUrl(z.url()).default(ENTRA_V1_ISSUER_BASE).describe('Host part of v1.0 issuers (https://sts.windows.net/{tid}/); never fetched'),
    tokenTypes: z
      .array(z.string().regex(/^urn:\S+$/, 'must be a urn:'))
      .min(1)
      .default([TOKEN_TYPE_AZURE_MI, TOKEN_TYPE_STARFLY_AZURE_MI])
      .describe('Token type URNs this validator answers for'),
    clockSkewSeconds: z.number().int().min(0).max(60).default(60).describe('Tolerance for exp, nbf and iat'),
    maxTokenLifetimeSeconds: z
      .number()
      .int()
      .positive()
      .max(172_800)
      .default(90_000)
      .describe('Refuse tokens whose exp - iat exceeds this. Managed identity tokens are issued for about 24 hours'),
  })
  .strict();

export type AzureConfig = z.output<typeof azureConfigSchema>;

/**
 * Verifies Microsoft Entra access tokens of Azure managed identities for Tessera's app registration.
 *
 * Issuers are pinned per allowed tenant and version; the token's `tid` must be that tenant. Entra tokens
 * name the app, not the broker, so the verifier is told to accept the app's audiences and then every
 * token must carry exactly one audience, one of those: a token naming only the broker (or anything
 * else) is refused. Only app-only tokens pass (no `scp`; `idtyp`, when present, `app`). The subject is
 * `oid`, the identity's object id, stable across apps and never reused; `sub` is pairwise per app.
 */
export class AzureManagedIdentityValidator implements SubjectValidator {
  readonly tokenTypes: readonly TokenTypeUrn[];
  readonly clockSkewSeconds: number;
  /** Verification is a pure function of the token and the issuer's keys: core may reuse it. */
  readonly caching: ValidationCaching = {};
  readonly #endpoints: ReadonlyMap<string, TenantEndpoint>;
  readonly #verifiers = new Map<string, { readonly jwksUri: string; readonly verifier: JwtVerifier }>();
  readonly #audiences: ReadonlySet<string>;
  readonly #objectIds: ReadonlySet<string> | undefined;
  readonly #resourceIds: readonly Matcher[] | undefined;

  constructor(
    private readonly config: AzureConfig,
    private readonly deps: JwtVerifierDeps,
    private readonly discovery: TenantDiscovery,
  ) {
    this.tokenTypes = config.tokenTypes as TokenTypeUrn[];
    this.clockSkewSeconds = config.clockSkewSeconds;
    const endpoints = [...new Set(config.tenants)].flatMap((tenant) => tenantEndpoints(tenant, config.tokenVersions, config));
    this.#endpoints = new Map(endpoints.map((endpoint) => [endpoint.issuer, endpoint]));
    this.#audiences = new Set(config.audiences);
    this.#objectIds = config.objectIds ? new Set(config.objectIds) : undefined;
    this.#resourceIds = config.resourceIds?.map(compileResourceIdPattern);
  }

  /** Exact issuers accepted, two per tenant when both versions are. */
  get issuers(): readonly string[] {
    return [...this.#endpoints.keys()];
  }

  /** Discovers every endpoint and fetches its keys once; failures are reported, not thrown. */
  async warm(): Promise<{ issuer: string; ok: boolean; reason?: string }[]> {
    return Promise.all(
      [...this.#endpoints.values()].map(async (endpoint) => {
        try {
          return { issuer: endpoint.issuer, ok: await this.deps.jwks.warm(await this.discovery.jwksUriOf(endpoint)) };
        } catch (error) {
          this.discovery.forget(endpoint);
          return { issuer: endpoint.issuer, ok: false, reason: error instanceof OAuthError ? error.detail : String(error) };
        }
      }),
    );
  }

  async validate(token: string, ctx: ValidationContext): Promise<VerifiedIdentity> {
    const endpoint = this.#endpointOf(token);
    const { identity, payload } = await (await this.#verifierFor(endpoint)).verify(token, ctx);

    // Entra access tokens carry one audience. It must be this app: a token merely naming the broker
    // (which JwtVerifier also lets through) or naming several parties is not one Entra issued for it.
    if (identity.audiences.length !== 1 || !this.#audiences.has(identity.audiences[0]!)) throw new InvalidToken('audience', 'aud is not the configured app');
    // Microsoft: check that tid is a GUID and that the issuer is the one of that very tenant.
    if (payload.tid !== endpoint.tenantId) throw new InvalidToken('claims', 'tid does not match the issuer tenant');
    if (payload.ver !== endpoint.version) throw new InvalidToken('claims', 'ver does not match the issuer');
    const oid = payload.oid;
    if (typeof oid !== 'string' || !GUID.test(oid)) throw new InvalidToken('claims', 'oid');

    // A managed identity signs in as itself: delegated (user) tokens carry scp, app-only tokens never do.
    if (payload.scp !== undefined) throw new InvalidToken('claims', 'scp present: delegated token');
    if (payload.idtyp !== undefined ? payload.idtyp !== 'app' : this.config.requireIdtyp) throw new InvalidToken('claims', 'idtyp is not app');
    const clientAuth = endpoint.version === '1.0' ? 'appidacr' : 'azpacr';
    if (this.config.requireCertificateClient && payload[clientAuth] !== '2') throw new InvalidToken('claims', `${clientAuth} is not certificate`);

    if (this.#objectIds && !this.#objectIds.has(oid)) throw new InvalidToken('claims', 'oid not allowed');
    const resourceId = typeof payload.xms_mirid === 'string' && payload.xms_mirid !== '' ? payload.xms_mirid : undefined;
    if (this.#resourceIds && !(resourceId !== undefined && this.#resourceIds.some((match) => match(resourceId)))) {
      throw new InvalidToken('claims', 'xms_mirid not allowed');
    }

    const attributes: Record<string, string | readonly string[]> = { ...identity.attributes };
    if (resourceId !== undefined) {
      // Azure resource ids are case-insensitive and tokens do not keep the portal's casing: policy sees lowercase.
      attributes['azure.resourceId'] = resourceId.toLowerCase();
      const resource = parseResourceId(resourceId);
      if (resource) attributes['azure.subscriptionId'] = resource.subscriptionId;
      if (resource?.resourceGroup) attributes['azure.resourceGroup'] = resource.resourceGroup;
    }
    return { ...identity, subject: oid, attributes };
  }

  /** The endpoint named by the unverified `iss`: it only picks which pinned issuer's keys to try. */
  #endpointOf(token: string): TenantEndpoint {
    const issuer: unknown = decodeUnverifiedJwt(token, MAX_TOKEN_BYTES).payload.iss;
    const endpoint = typeof issuer === 'string' ? this.#endpoints.get(issuer) : undefined;
    if (!endpoint) throw new InvalidToken('untrusted_issuer');
    return endpoint;
  }

  /** One JwtVerifier per endpoint, holding only that endpoint's issuer and the keys its discovery named. */
  async #verifierFor(endpoint: TenantEndpoint): Promise<JwtVerifier> {
    const jwksUri = await this.discovery.jwksUriOf(endpoint);
    const cached = this.#verifiers.get(endpoint.issuer);
    if (cached?.jwksUri === jwksUri) return cached.verifier;
    const verifier = new JwtVerifier(
      {
        maxTokenBytes: MAX_TOKEN_BYTES,
        issuers: [
          {
            issuer: endpoint.issuer,
            jwksUri,
            // Lets tokens for the app past jose's audience check; validate() then requires the app.
            allowedAudiences: this.config.audiences,
            algorithms: ['RS256'],
            clockSkewSeconds: this.config.clockSkewSeconds,
            maxTokenLifetimeSeconds: this.config.maxTokenLifetimeSeconds,
            attributes: {
              'azure.tenantId': 'tid',
              'azure.objectId': 'oid',
              // v1.0 names the client `appid`, v2.0 `azp`.
              'azure.appId': endpoint.version === '1.0' ? 'appid' : 'azp',
              'azure.roles': 'roles',
            },
          },
        ],
      },
      this.deps,
    );
    this.#verifiers.set(endpoint.issuer, { jwksUri, verifier });
    return verifier;
  }
}

export default definePlugin({
  name: 'azure',
  version: '0.1.0',
  apiVersion: '^1',
  description: 'Validates Microsoft Entra access tokens of Azure managed identities; policy can match azure.objectId, azure.resourceGroup...',
  config: azureConfigSchema,
  deps: { jwks: tokens.jwksCache, http: tokens.httpFetcher, log: tokens.logger },
  async init({ config, deps }) {
    const validator = new AzureManagedIdentityValidator(config, deps, new TenantDiscovery(deps.http, new URL(config.authority).origin));
    for (const { issuer, ok, reason } of await validator.warm()) {
      if (!ok) deps.log.warn({ plugin: 'azure', issuer, reason }, 'Entra keys not reachable at startup; will retry on first token');
    }
    return { validators: [validator] };
  },
});
