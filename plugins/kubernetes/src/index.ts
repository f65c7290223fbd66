import { definePlugin, tokens, type TokenTypeUrn } from '@tessera/plugin-sdk';
import { kubernetesConfigSchema } from './config.js';
import { OfflineCluster } from './offline-cluster.js';
import { TokenReviewCluster } from './token-review-cluster.js';
import { KubernetesValidator, type KubernetesCluster } from './validator.js';

export { kubernetesConfigSchema, LEGACY_ISSUER, TOKEN_TYPE_KUBERNETES_SA } from './config.js';
export type { ClusterConfig, KubernetesConfig, OfflineClusterConfig, TokenReviewClusterConfig } from './config.js';
export { LEGACY_IDENTITY_LIFETIME_SECONDS, tokenReviewIssuer } from './token-review-cluster.js';
export { parseJwks } from './jwks-file.js';
export { KubernetesValidator } from './validator.js';

export default definePlugin({
  name: 'kubernetes',
  version: '0.1.0',
  apiVersion: '^1',
  description: 'Validates Kubernetes service-account tokens from several clusters, offline (OIDC/JWKS) or by TokenReview',
  config: kubernetesConfigSchema,
  deps: { jwks: tokens.jwksCache, http: tokens.httpFetcher, log: tokens.logger, metrics: tokens.metrics },
  async init({ config, deps, configDir, purpose }) {
    const log = deps.log.child({ plugin: 'kubernetes' });
    const reviews = deps.metrics.counter('tessera_kubernetes_token_reviews_total', 'TokenReview calls by cluster and outcome', ['cluster', 'outcome']);
    const clusters: KubernetesCluster[] = [];
    const close = () => {
      for (const cluster of clusters) if (cluster instanceof OfflineCluster) cluster.close();
    };
    try {
      for (const cluster of config.clusters) {
        // A read-only command may run anywhere; a pod's own service account exists only in the pod.
        if (purpose === 'check' && cluster.mode !== 'offline' && cluster.inCluster) continue;
        clusters.push(
          cluster.mode === 'offline'
            ? await OfflineCluster.create(cluster, { jwks: deps.jwks, http: deps.http, log }, configDir)
            : TokenReviewCluster.create(cluster, { log, reviews }, configDir),
        );
      }
    } catch (error) {
      close();
      throw error;
    }
    return { validators: [new KubernetesValidator(config.tokenTypes as TokenTypeUrn[], clusters, config.maxTokenBytes)], close };
  },
});
