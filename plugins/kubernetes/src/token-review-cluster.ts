import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { ApiException, AuthenticationV1Api, KubeConfig, wrapHttpLibrary, type Cluster, type V1TokenReview, type V1TokenReviewStatus } from '@kubernetes/client-node';
import type { JWTPayload } from 'jose';
import {
  InvalidToken,
  TemporarilyUnavailable,
  type Counter,
  type Logger,
  type OAuthError,
  type TokenRejection,
  type ValidationContext,
  type VerifiedIdentity,
} from '@tessera/plugin-sdk';
import type { TokenReviewClusterConfig } from './config.js';
import { PinnedTransport, TransportRefusal } from './pinned-transport.js';
import { reviewedServiceAccount, serviceAccountAttributes } from './service-account.js';

/** Issuer of identities proven by TokenReview: the cluster vouches for them, not a signature we checked. */
export function tokenReviewIssuer(clusterName: string): string {
  return `k8s:${clusterName}`;
}

/**
 * A legacy token never expires; the identity built from it is given this lifetime, so what policy grants
 * for it (bounded by the subject's expiry) lasts no longer than this after the review.
 */
export const LEGACY_IDENTITY_LIFETIME_SECONDS = 300;

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])$/;

export interface TokenReviewClusterDeps {
  readonly log: Logger;
  readonly reviews: Counter;
}

/**
 * A cluster whose tokens are checked by its own API server (`POST /apis/authentication.k8s.io/v1/tokenreviews`)
 * with @kubernetes/client-node. The API server verifies signature, expiry and audience, and that the bound
 * pod, secret and service account still exist with the same uid: a deleted pod's token stops working here.
 */
export class TokenReviewCluster {
  readonly #api: AuthenticationV1Api;
  readonly #origin: string;

  private constructor(
    readonly config: TokenReviewClusterConfig,
    kubeConfig: KubeConfig,
    origin: string,
    private readonly deps: TokenReviewClusterDeps,
  ) {
    this.#api = kubeConfig.makeApiClient(AuthenticationV1Api);
    this.#origin = origin;
  }

  /** Loads the credentials and checks the API address at startup; any problem stops startup, named. */
  static create(config: TokenReviewClusterConfig, deps: TokenReviewClusterDeps, configDir: string): TokenReviewCluster {
    const fail = (problem: string): never => {
      throw new Error(`kubernetes: cluster ${config.name}: ${problem}`);
    };
    const kubeConfig = new KubeConfig();
    if (config.inCluster) {
      if (!process.env.KUBERNETES_SERVICE_HOST || !process.env.KUBERNETES_SERVICE_PORT) fail('inCluster: KUBERNETES_SERVICE_HOST/PORT are not set (not running in a pod?)');
      kubeConfig.loadFromCluster();
      const caFile = kubeConfig.getCurrentCluster()?.caFile;
      if (caFile && !existsSync(caFile)) fail(`inCluster: ${caFile} not found (automountServiceAccountToken off?)`);
    } else {
      const path = resolve(configDir, config.kubeconfig!);
      try {
        kubeConfig.loadFromFile(path);
      } catch (error) {
        fail(`kubeconfig ${path}: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`);
      }
      if (config.context) {
        if (!kubeConfig.getContextObject(config.context)) fail(`kubeconfig has no context ${config.context}`);
        kubeConfig.setCurrentContext(config.context);
      }
    }
    const cluster = kubeConfig.getCurrentCluster();
    if (!cluster) return fail('kubeconfig names no cluster for its current context');
    if (!kubeConfig.getCurrentUser()) fail('kubeconfig names no user for its current context');
    const server = URL.canParse(cluster.server) ? new URL(cluster.server) : fail('cluster server is not a URL');
    const loopback = LOOPBACK.test(server.hostname);
    if (server.protocol === 'http:' && !loopback) fail('cluster server must be https (plain http only on loopback, e.g. kubectl proxy)');
    if (server.protocol !== 'http:' && server.protocol !== 'https:') fail('cluster server must be https');
    // Tokens travel in the request body: a connection whose peer was not authenticated could hand them to anyone.
    if (server.protocol === 'https:' && cluster.skipTLSVerify) fail('insecure-skip-tls-verify would send tokens to whoever answers; give certificate-authority(-data) instead');
    if (server.protocol === 'http:') plainLoopback(kubeConfig, cluster);
    return new TokenReviewCluster(config, kubeConfig, server.origin, deps);
  }

  /**
   * Reviews a token already routed here by its unverified `iss`. Claims are read before the review only
   * to refuse early what cannot pass (and to give the audit a precise reason) without sending the token
   * out; after an authenticated review they are the cluster's own.
   */
  async validate(token: string, payload: JWTPayload, legacy: boolean, ctx: ValidationContext): Promise<VerifiedIdentity> {
    const audiences = [ctx.brokerIssuer, ctx.tokenEndpoint, ...(ctx.brokerAudienceOnly ? [] : this.config.allowedAudiences)];
    if (!legacy) this.#precheck(payload, audiences, ctx.now);

    // A legacy token has no audience: the API server checks it against its own audiences, so it is
    // reviewed without spec.audiences. Requiring ours would refuse every legacy token.
    const status = await this.#review(token, legacy ? undefined : audiences, ctx.signal);
    if (status.authenticated !== true) {
      this.deps.reviews.inc({ cluster: this.config.name, outcome: 'unauthenticated' });
      throw unauthenticated(status.error);
    }
    this.deps.reviews.inc({ cluster: this.config.name, outcome: 'authenticated' });
    // An empty status.audiences means "valid for the API server": not for us. Compare exact elements.
    if (!legacy && !(status.audiences ?? []).some((audience) => audiences.includes(audience))) {
      throw new InvalidToken('audience', 'tokenreview audiences do not name the broker');
    }
    const account = reviewedServiceAccount(status.user);
    // The reviewed token is the one whose claims we read: its sub must be the user the cluster names.
    if (payload.sub !== `system:serviceaccount:${account.namespace}:${account.name}`) throw new InvalidToken('claims', 'sub does not match the tokenreview user');

    const expiresAt = legacy ? new Date(ctx.now.getTime() + LEGACY_IDENTITY_LIFETIME_SECONDS * 1000) : new Date((payload.exp as number) * 1000);
    const tokenAudiences = typeof payload.aud === 'string' ? [payload.aud] : Array.isArray(payload.aud) ? payload.aud : [];
    return {
      issuer: tokenReviewIssuer(this.config.name),
      subject: `system:serviceaccount:${account.namespace}:${account.name}`,
      audiences: legacy ? [...(status.audiences ?? [])] : tokenAudiences,
      expiresAt,
      tokenType: ctx.tokenType,
      claims: payload,
      attributes: serviceAccountAttributes(this.config.name, account),
    };
  }

  #precheck(payload: JWTPayload, audiences: readonly string[], now: Date): void {
    const nowSeconds = Math.floor(now.getTime() / 1000);
    const skew = this.config.clockSkewSeconds;
    if (typeof payload.exp !== 'number') throw new InvalidToken('claims', 'exp missing');
    if (payload.exp + skew <= nowSeconds) throw new InvalidToken('expired');
    if (typeof payload.nbf === 'number' && payload.nbf > nowSeconds + skew) throw new InvalidToken('not_yet_valid');
    if (typeof payload.iat === 'number' && payload.iat > nowSeconds + skew) throw new InvalidToken('not_yet_valid', 'iat in the future');
    if (payload.exp - (typeof payload.iat === 'number' ? payload.iat : nowSeconds) > this.config.maxTokenLifetimeSeconds) throw new InvalidToken('lifetime', 'exp too far after iat');
    const aud = typeof payload.aud === 'string' ? [payload.aud] : Array.isArray(payload.aud) ? payload.aud : [];
    if (!aud.some((audience) => audiences.includes(audience))) throw new InvalidToken('audience', 'aud does not name the broker');
    const k8s = payload['kubernetes.io'];
    if (typeof k8s === 'object' && k8s !== null && 'warnafter' in k8s) throw new InvalidToken('claims', 'kubernetes.io.warnafter (extended auto-mounted token)');
  }

  async #review(token: string, audiences: readonly string[] | undefined, outer: AbortSignal): Promise<V1TokenReviewStatus> {
    const signal = AbortSignal.any([outer, AbortSignal.timeout(this.config.timeoutMs)]);
    const body: V1TokenReview = {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec: { token, ...(audiences ? { audiences: [...audiences] } : {}) },
    };
    let review: V1TokenReview;
    try {
      review = await untilAborted(this.#api.createTokenReview({ body }, { httpApi: wrapHttpLibrary(new PinnedTransport(this.#origin, signal)) }), signal);
    } catch (error) {
      this.deps.reviews.inc({ cluster: this.config.name, outcome: 'failed' });
      throw this.#failure(error, signal);
    }
    if (!review.status) {
      this.deps.reviews.inc({ cluster: this.config.name, outcome: 'failed' });
      throw new TemporarilyUnavailable(UNAVAILABLE, { detail: `tokenreview ${this.config.name}: no status in the answer` });
    }
    return review.status;
  }

  /** API failures: nothing from the response body (it echoes the token) reaches an error, a cause or a log. */
  #failure(error: unknown, signal: AbortSignal): OAuthError {
    const cluster = this.config.name;
    const unavailable = (what: string) => new TemporarilyUnavailable(UNAVAILABLE, { detail: `tokenreview ${cluster}: ${what}` });
    if (error instanceof ApiException) {
      const status = error.code;
      // A malformed review request can only come from what was presented: a client error, not an outage.
      if (status === 400 || status === 422) return new InvalidToken('malformed', 'tokenreview refused the request');
      if (status === 401 || status === 403) {
        this.deps.log.error({ cluster, status }, 'the cluster API refused TokenReview: the broker needs create on tokenreviews.authentication.k8s.io (ClusterRole system:auth-delegator)');
      } else {
        this.deps.log.warn({ cluster, status }, 'TokenReview failed');
      }
      return unavailable(`HTTP ${status}`);
    }
    if (error instanceof TransportRefusal) {
      this.deps.log.error({ cluster, refused: error.kind }, 'TokenReview answer refused (the cluster API must not redirect)');
      return unavailable(error.kind);
    }
    if (signal.aborted) {
      this.deps.log.warn({ cluster }, 'TokenReview timed out');
      return unavailable('timeout');
    }
    const code = (error as { code?: unknown; cause?: { code?: unknown } }).cause?.code ?? (error as { code?: unknown }).code;
    this.deps.log.warn({ cluster, code: typeof code === 'string' ? code : undefined, err: (error as Error)?.name }, 'cluster API unreachable for TokenReview');
    return unavailable('unreachable');
  }
}

const UNAVAILABLE = 'cluster API is unavailable, retry later';

/**
 * The API server's `status.error` is free text naming audiences and objects: only its gist becomes the
 * reason, never its words.
 */
function unauthenticated(error: string | undefined): InvalidToken {
  const text = error ?? '';
  const [reason, detail]: [TokenRejection, string] = /expired/i.test(text)
    ? ['expired', 'tokenreview: expired']
    : /audience/i.test(text)
      ? ['audience', 'tokenreview: audience']
      : /not found|deleted|does not match|uid/i.test(text)
        ? ['claims', 'tokenreview: bound object gone']
        : ['signature', 'tokenreview: not authenticated'];
  return new InvalidToken(reason, detail);
}

/** Client-node would still finish exec credential plugins or file reads after the budget: stop waiting. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/**
 * client-node only talks plain HTTP when insecure-skip-tls-verify is set. For a loopback server (kubectl
 * proxy, a sidecar) there is no TLS to skip, so the flag is set here rather than asked of the operator.
 */
function plainLoopback(kubeConfig: KubeConfig, current: Cluster): void {
  kubeConfig.loadFromOptions({
    clusters: kubeConfig.getClusters().map((cluster) => (cluster === current ? { ...cluster, skipTLSVerify: true } : cluster)),
    contexts: kubeConfig.getContexts(),
    users: kubeConfig.getUsers(),
    currentContext: kubeConfig.getCurrentContext(),
  });
}
