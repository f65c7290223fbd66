import { ASYMMETRIC_ALGORITHMS, decodeUnverifiedJwt, InvalidToken, type SubjectValidator, type TokenTypeUrn, type ValidationCaching, type ValidationContext, type VerifiedIdentity } from '@tessera/plugin-sdk';
import { LEGACY_ISSUER } from './config.js';
import { OfflineCluster } from './offline-cluster.js';
import { TokenReviewCluster } from './token-review-cluster.js';

export type KubernetesCluster = OfflineCluster | TokenReviewCluster;

/**
 * Kubernetes service-account tokens from several clusters. Each token is routed by its exact `iss` to
 * the one cluster that issues it; that cluster's keys, or that cluster's API server, decide. A token is
 * never tried against, nor sent to, any other cluster.
 */
export class KubernetesValidator implements SubjectValidator {
  readonly #clusters: ReadonlyMap<string, KubernetesCluster>;
  readonly #legacy: TokenReviewCluster | undefined;
  readonly clockSkewSeconds: number;
  /** Keys or a TokenReview vouch for a token until it expires; core bounds reuse (limits.verifiedTokens.maxAgeSeconds). */
  readonly caching: ValidationCaching = {};

  constructor(
    readonly tokenTypes: readonly TokenTypeUrn[],
    clusters: readonly KubernetesCluster[],
    private readonly maxTokenBytes: number,
  ) {
    this.#clusters = new Map(clusters.map((cluster) => [cluster.config.issuer, cluster]));
    this.clockSkewSeconds = Math.max(0, ...clusters.map((cluster) => cluster.config.clockSkewSeconds));
    this.#legacy = clusters.find((cluster): cluster is TokenReviewCluster => cluster instanceof TokenReviewCluster && cluster.config.allowLegacyTokens);
  }

  async validate(token: string, ctx: ValidationContext): Promise<VerifiedIdentity> {
    const { header, payload } = decodeUnverifiedJwt(token, this.maxTokenBytes);
    // RFC 7515 §4.1.11: no critical extensions are understood here or by the API server.
    if (header.crit !== undefined) throw new InvalidToken('malformed', 'crit header');
    // Kubernetes signs with its asymmetric service-account keys; `none` or HS* is never sent for review.
    if (!(ASYMMETRIC_ALGORITHMS as readonly unknown[]).includes(header.alg)) throw new InvalidToken('algorithm', 'alg not allowed');
    // Unverified claims only choose where the token goes; the signature is checked there.
    if (payload.iss === LEGACY_ISSUER) {
      if (!this.#legacy) throw new InvalidToken('claims', 'legacy service-account token (no exp, no aud)');
      return this.#legacy.validate(token, payload, true, ctx);
    }
    const cluster = typeof payload.iss === 'string' ? this.#clusters.get(payload.iss) : undefined;
    if (!cluster) throw new InvalidToken('untrusted_issuer');
    return cluster instanceof OfflineCluster ? cluster.validate(token, ctx) : cluster.validate(token, payload, false, ctx);
  }
}
