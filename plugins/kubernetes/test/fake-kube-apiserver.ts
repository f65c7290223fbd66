import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { createLocalJWKSet, jwtVerify, type JWK, type JWTPayload } from 'jose';

export interface FakeKubeApiServerOptions {
  /** The cluster's --service-account-issuer. */
  readonly issuer: string;
  /** The cluster's public service-account keys (--service-account-key-file). */
  readonly keys: () => readonly JWK[];
  /** --api-audiences; Kubernetes defaults it to the issuer. */
  readonly implicitAudiences?: readonly string[];
  /** The bearer token the broker must present (its own service account). */
  readonly reviewerToken: string;
  readonly tls?: { readonly key: string; readonly cert: string };
}

export interface ReceivedReview {
  readonly token: string;
  readonly audiences?: readonly string[];
}

const LEGACY_ISSUER = 'kubernetes/serviceaccount';

/**
 * A Kubernetes API server reduced to `POST /apis/authentication.k8s.io/v1/tokenreviews`, answering like
 * kube-apiserver (pkg/serviceaccount/jwt.go): signature with the cluster keys, issuer, expiry, audience
 * intersection with the API server's implicit audiences for legacy tokens, and existence of the bound
 * objects. Unauthenticated tokens get 201 with `status.error`; the broker's own credentials are checked.
 */
export class FakeKubeApiServer {
  readonly reviews: ReceivedReview[] = [];
  /** Every HTTP request, reviews or not. */
  requests = 0;
  /** `up`, or a failure every request gets. */
  mode: 'up' | 'down' | 'forbidden' = 'up';
  /** Answer every request with a 307 to this URL (what a misbehaving proxy in front of the API could do). */
  redirectTo: string | undefined;
  /** uids of pods and service accounts that have been deleted: their tokens no longer authenticate. */
  readonly deleted = new Set<string>();
  /** Replaces the computed `status` of authenticated reviews (an audience-unaware or misbehaving server). */
  rewriteStatus: ((status: Record<string, unknown>) => Record<string, unknown>) | undefined;
  #held: ServerResponse[] | undefined;

  private constructor(
    private readonly server: Server,
    readonly url: string,
    private readonly options: FakeKubeApiServerOptions,
  ) {}

  static async start(options: FakeKubeApiServerOptions): Promise<FakeKubeApiServer> {
    let self: FakeKubeApiServer | undefined;
    const handler = (request: IncomingMessage, response: ServerResponse) => void self!.handle(request, response);
    const server = options.tls ? createHttpsServer({ key: options.tls.key, cert: options.tls.cert }, handler) : createHttpServer(handler);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const port = (server.address() as AddressInfo).port;
    self = new FakeKubeApiServer(server, `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`, options);
    return self;
  }

  /** Holds every request unanswered until the returned function is called (then answers them 503). */
  stall(): () => void {
    this.#held ??= [];
    return () => {
      const held = this.#held ?? [];
      this.#held = undefined;
      for (const response of held) if (!response.writableEnded && !response.destroyed) status(response, 503, 'ServiceUnavailable', 'the server is currently unable to handle the request');
    };
  }

  close(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    this.requests++;
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    if (this.#held) return void this.#held.push(response);
    if (this.mode === 'down') return status(response, 503, 'ServiceUnavailable', 'the server is currently unable to handle the request');
    if (this.redirectTo) {
      response.writeHead(307, { location: this.redirectTo, 'content-length': 0 });
      return void response.end();
    }
    if (request.headers.authorization !== `Bearer ${this.options.reviewerToken}`) return status(response, 401, 'Unauthorized', 'Unauthorized');
    if (this.mode === 'forbidden') {
      return status(
        response,
        403,
        'Forbidden',
        'tokenreviews.authentication.k8s.io is forbidden: User "system:serviceaccount:tessera:broker" cannot create resource "tokenreviews" in API group "authentication.k8s.io" at the cluster scope',
      );
    }
    if (request.method !== 'POST' || new URL(request.url ?? '/', 'http://x').pathname !== '/apis/authentication.k8s.io/v1/tokenreviews') {
      return status(response, 404, 'NotFound', 'the server could not find the requested resource');
    }
    let review: { apiVersion?: unknown; kind?: unknown; spec?: { token?: unknown; audiences?: unknown } };
    try {
      review = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof review;
    } catch {
      return status(response, 400, 'BadRequest', 'the object provided is unrecognized');
    }
    if (review.apiVersion !== 'authentication.k8s.io/v1' || review.kind !== 'TokenReview' || typeof review.spec?.token !== 'string') {
      return status(response, 400, 'BadRequest', 'the object provided is unrecognized');
    }
    const audiences = Array.isArray(review.spec.audiences) ? (review.spec.audiences as string[]) : undefined;
    this.reviews.push({ token: review.spec.token, ...(audiences ? { audiences } : {}) });
    const outcome = await this.authenticate(review.spec.token, audiences);
    // Like the real API server, the answer echoes the spec, token included.
    const body = {
      kind: 'TokenReview',
      apiVersion: 'authentication.k8s.io/v1',
      metadata: { creationTimestamp: null },
      spec: review.spec,
      status:
        'error' in outcome
          ? { user: {}, error: outcome.error }
          : (this.rewriteStatus ?? ((same) => same))({ authenticated: true, user: outcome.user, audiences: outcome.audiences }),
    };
    send(response, 201, body);
  }

  private async authenticate(token: string, requested: readonly string[] | undefined): Promise<{ error: string } | { user: Record<string, unknown>; audiences: string[] }> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, createLocalJWKSet({ keys: [...this.options.keys()] }), { algorithms: ['RS256', 'ES256'] }));
    } catch (error) {
      const code = (error as { code?: string }).code;
      return { error: code === 'ERR_JWT_EXPIRED' ? '[invalid bearer token, service account token has expired]' : '[invalid bearer token, square/go-jose: error in cryptographic primitive]' };
    }
    const legacy = payload.iss === LEGACY_ISSUER;
    if (!legacy && payload.iss !== this.options.issuer) return { error: `[invalid bearer token, token issuer "${String(payload.iss)}" is invalid]` };
    if (!legacy && typeof payload.exp !== 'number') return { error: '[invalid bearer token, service account token has no expiry]' };
    const implicit = [...(this.options.implicitAudiences ?? [this.options.issuer])];
    const tokenAudiences = typeof payload.aud === 'string' ? [payload.aud] : (payload.aud ?? []);
    // jwt.go: a token without audience is a legacy token, valid only for the API server's own audiences.
    const effective = tokenAudiences.length === 0 ? implicit : tokenAudiences;
    const wanted = requested ?? implicit;
    const audiences = effective.filter((audience) => wanted.includes(audience));
    if (audiences.length === 0) return { error: `[invalid bearer token, token audiences ${JSON.stringify(effective)} is invalid for the target audiences ${JSON.stringify(wanted)}]` };

    if (legacy) {
      const uid = String(payload['kubernetes.io/serviceaccount/service-account.uid']);
      if (this.deleted.has(uid)) return { error: `[invalid bearer token, service account UID (${uid}) does not match claim]` };
      return {
        user: {
          username: payload.sub,
          uid,
          groups: ['system:serviceaccounts', `system:serviceaccounts:${String(payload['kubernetes.io/serviceaccount/namespace'])}`, 'system:authenticated'],
        },
        audiences,
      };
    }
    const k8s = payload['kubernetes.io'] as {
      namespace: string;
      serviceaccount: { name: string; uid: string };
      pod?: { name: string; uid: string };
      node?: { name: string; uid: string };
    };
    if (this.deleted.has(k8s.serviceaccount.uid)) return { error: `[invalid bearer token, serviceaccounts "${k8s.serviceaccount.name}" not found]` };
    if (k8s.pod && this.deleted.has(k8s.pod.uid)) return { error: `[invalid bearer token, pods "${k8s.pod.name}" not found]` };
    const extra: Record<string, string[]> = {};
    if (k8s.pod) {
      extra['authentication.kubernetes.io/pod-name'] = [k8s.pod.name];
      extra['authentication.kubernetes.io/pod-uid'] = [k8s.pod.uid];
    }
    if (k8s.node) {
      extra['authentication.kubernetes.io/node-name'] = [k8s.node.name];
      extra['authentication.kubernetes.io/node-uid'] = [k8s.node.uid];
    }
    if (typeof payload.jti === 'string') extra['authentication.kubernetes.io/credential-id'] = [`JTI=${payload.jti}`];
    return {
      user: {
        username: `system:serviceaccount:${k8s.namespace}:${k8s.serviceaccount.name}`,
        uid: k8s.serviceaccount.uid,
        groups: ['system:serviceaccounts', `system:serviceaccounts:${k8s.namespace}`, 'system:authenticated'],
        extra,
      },
      audiences,
    };
  }
}

function send(response: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}

/** A metav1.Status failure, as the API server sends for errors. */
function status(response: ServerResponse, code: number, reason: string, message: string): void {
  send(response, code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });
}
