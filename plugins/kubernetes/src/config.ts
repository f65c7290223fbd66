import { z } from 'zod';
import { ASYMMETRIC_ALGORITHMS, fetchableUrl, type TokenTypeUrn } from '@tessera/plugin-sdk';

/** Tessera's token type for Kubernetes service-account tokens (Kubernetes defines none). */
export const TOKEN_TYPE_KUBERNETES_SA = 'urn:tessera:token-type:kubernetes-sa' satisfies TokenTypeUrn;

/** `iss` of legacy, secret-based service-account tokens: the same on every cluster. */
export const LEGACY_ISSUER = 'kubernetes/serviceaccount';

const clusterName = z
  .string()
  .max(63)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'must be a DNS label (lowercase letters, digits, -)');

/** Keys every cluster has, whatever its mode. */
const clusterCommon = {
  name: clusterName.describe('Cluster name, unique: the k8s.cluster attribute, and in tokenReview mode the identity issuer k8s:<name>'),
  issuer: z
    .string()
    .min(1)
    .describe("The cluster's --service-account-issuer: exact iss of its tokens, compared byte for byte. Routes each token to its one cluster"),
  allowedAudiences: z
    .array(z.string().min(1))
    .default([])
    .describe('Audiences accepted besides the broker issuer and token endpoint. Never the API server audience: that admits every auto-mounted token'),
  allowLegacyTokens: z
    .boolean()
    .default(false)
    .describe('Accept legacy secret-based tokens (iss kubernetes/serviceaccount, no exp, no aud). tokenReview mode only, on at most one cluster'),
  clockSkewSeconds: z.number().int().min(0).max(300).default(60).describe('Tolerance for exp, nbf and iat'),
  maxTokenLifetimeSeconds: z
    .number()
    .int()
    .positive()
    .max(7 * 86_400)
    .default(86_400)
    .describe('Refuse tokens whose exp - iat exceeds this (projected tokens default to 1 h)'),
};

export const offlineClusterSchema = z
  .object({
    mode: z.literal('offline').describe('Verify signatures locally with the cluster issuer keys'),
    ...clusterCommon,
    jwksUri: fetchableUrl
      .optional()
      .describe("JWKS URL; default: OIDC discovery of the issuer (the API server's /.well-known/openid-configuration)"),
    jwksFile: z
      .string()
      .min(1)
      .optional()
      .describe('JWKS document on disk, relative to the config file, for issuers the broker cannot reach (kubectl get --raw /openid/v1/jwks). Reloaded when it changes'),
    algorithms: z
      .array(z.enum(ASYMMETRIC_ALGORITHMS))
      .min(1)
      .default(['RS256', 'ES256'])
      .describe('Allowed JWS algorithms (RSA service-account keys sign RS256, EC keys ES256/ES384/ES512)'),
  })
  .strict();

export const tokenReviewClusterSchema = z
  .object({
    mode: z.literal('tokenReview').describe("Ask the cluster's TokenReview API; also catches deleted pods and service accounts"),
    ...clusterCommon,
    kubeconfig: z
      .string()
      .min(1)
      .optional()
      .describe("Kubeconfig file (relative to the config file) with the broker's credentials for this cluster; they need create on tokenreviews (ClusterRole system:auth-delegator)"),
    context: z.string().min(1).optional().describe("Kubeconfig context to use; default: the file's current-context"),
    inCluster: z.boolean().default(false).describe("Use the broker pod's own service account and the in-cluster API address instead of a kubeconfig"),
    timeoutMs: z.number().int().positive().max(30_000).default(5_000).describe('Upper bound per TokenReview call (the broker validation budget also applies)'),
  })
  .strict();

export const clusterSchema = z.discriminatedUnion('mode', [offlineClusterSchema, tokenReviewClusterSchema]).superRefine((cluster, ctx) => {
  if (cluster.mode === 'offline') {
    if (cluster.jwksUri && cluster.jwksFile) ctx.addIssue({ code: 'custom', path: ['jwksFile'], message: 'set jwksUri or jwksFile, not both' });
    if (cluster.allowLegacyTokens) {
      ctx.addIssue({
        code: 'custom',
        path: ['allowLegacyTokens'],
        message: 'offline mode cannot accept legacy tokens: they never expire, name no audience, and only the API server knows when their secret is deleted. Use mode tokenReview',
      });
    }
  } else {
    if (cluster.inCluster === (cluster.kubeconfig !== undefined)) {
      ctx.addIssue({ code: 'custom', path: ['kubeconfig'], message: 'set exactly one of kubeconfig or inCluster: true' });
    }
    if (cluster.context && !cluster.kubeconfig) ctx.addIssue({ code: 'custom', path: ['context'], message: 'context applies to a kubeconfig only' });
  }
  if (cluster.issuer === LEGACY_ISSUER) {
    ctx.addIssue({ code: 'custom', path: ['issuer'], message: `${LEGACY_ISSUER} is the legacy token issuer; name the cluster's --service-account-issuer and set allowLegacyTokens` });
  }
});

export const kubernetesConfigSchema = z
  .object({
    clusters: z.array(clusterSchema).min(1).describe('Trusted clusters; each token goes only to the cluster whose issuer its iss names'),
    tokenTypes: z
      .array(z.string().regex(/^urn:\S+$/, 'must be a urn:'))
      .min(1)
      .default([TOKEN_TYPE_KUBERNETES_SA])
      .describe('Token type URNs answered. Add urn:ietf:params:oauth:token-type:jwt only if no other plugin claims it'),
    maxTokenBytes: z.number().int().positive().max(65_536).default(16_384).describe('Longer tokens are refused unparsed'),
  })
  .strict()
  .superRefine((config, ctx) => {
    const seen = { name: new Map<string, number>(), issuer: new Map<string, number>() };
    config.clusters.forEach((cluster, index) => {
      for (const key of ['name', 'issuer'] as const) {
        const first = seen[key].get(cluster[key]);
        if (first === undefined) seen[key].set(cluster[key], index);
        else ctx.addIssue({ code: 'custom', path: ['clusters', index, key], message: `${key} already used by clusters[${first}]` });
      }
    });
    // Legacy tokens all carry the same iss, so nothing in them says which cluster to ask.
    const legacy = config.clusters.flatMap((cluster, index) => (cluster.allowLegacyTokens ? [index] : []));
    for (const index of legacy.slice(1)) {
      ctx.addIssue({ code: 'custom', path: ['clusters', index, 'allowLegacyTokens'], message: `only one cluster may accept legacy tokens (already clusters[${legacy[0]}])` });
    }
  });

export type KubernetesConfig = z.output<typeof kubernetesConfigSchema>;
export type ClusterConfig = z.output<typeof clusterSchema>;
export type OfflineClusterConfig = z.output<typeof offlineClusterSchema>;
export type TokenReviewClusterConfig = z.output<typeof tokenReviewClusterSchema>;
