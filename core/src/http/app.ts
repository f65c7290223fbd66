import Router from '@koa/router';
import Koa from 'koa';
import type { Context, Middleware } from 'koa';
import { GRANT_TYPE_TOKEN_EXCHANGE, InvalidRequest, UnsupportedGrantType, type KeyRing, type Logger } from '@tessera/plugin-sdk';
import type { BrokerConfig } from '../config/schema.js';
import type { PromMetrics } from '../metrics.js';
import type { IntrospectionEndpoint } from '../oauth/introspection.js';
import type { RevocationEndpoint } from '../oauth/revocation.js';
import type { TokenEndpoint } from '../oauth/token-endpoint.js';
import { tokenRequestFrom, type FrontDoor } from '../oauth/request.js';
import type { TokenResponse } from '../oauth/token-response.js';
import type { Readiness } from './drain.js';
import { runReadinessChecks, type ReadinessCheck } from './readiness.js';
import { receiveBodyFirst } from './body-text.js';
import type { AdmissionControl } from './load-shedding.js';
import { traceRequests } from './request-span.js';
import { readFormBody } from './form-body.js';
import { readJsonParameters } from './json-body.js';
import { renderErrors } from './render-errors.js';
import { mountAdminRoutes } from './admin-routes.js';
import type { AdminRevocationsEndpoint } from '../state/kill-switch-admin.js';
import { spiffeExchangeParameters, spiffeExchangeResponse } from './spiffe-exchange.js';

export interface HttpAppDeps {
  readonly tokenEndpoint: TokenEndpoint;
  readonly revocationEndpoint: RevocationEndpoint;
  readonly introspectionEndpoint: IntrospectionEndpoint;
  readonly keyRing: KeyRing;
  /** How long relying parties may cache `/keys`: no longer than a new key is published before it signs (default 300). */
  readonly jwksMaxAgeSeconds?: number;
  readonly metadata: Record<string, unknown>;
  readonly metrics: PromMetrics;
  readonly endpoints: BrokerConfig['endpoints'];
  readonly log: Logger;
  /** Path of the issuer URL: routes live under it, and RFC 8414 §3 inserts the well-known part before it. */
  readonly basePath: string;
  readonly maxBodyBytes: number;
  readonly readiness: () => Readiness;
  /** Dependencies that must answer before the broker reports ready (store, audit sink, ...). */
  readonly readinessChecks: readonly ReadinessCheck[];
  /** The kill-switch admin API, when `admin.clients` names someone. */
  readonly adminRevocations?: AdminRevocationsEndpoint;
  /** Admission control (`limits.inFlight`) for a door that does work, once its body is in; probes, keys and metadata never pass it. */
  readonly admit: AdmissionControl;
}

/** HTTP surface: transport rules only. Every front door hands its parameters to the one token endpoint. */
export function createHttpApp(deps: HttpAppDeps): Koa {
  const app = new Koa({ proxy: false });
  app.silent = true;
  const base = deps.basePath === '/' ? '' : deps.basePath.replace(/\/$/, '');
  const router = new Router();
  // The body comes in before the slot is taken: a slow upload holds its connection, never an in-flight slot.
  const bodyFirst = receiveBodyFirst(deps.maxBodyBytes);
  /** The admission-controlled doors by path, for the early shed. */
  const doors = new Map<string, string>();
  const door = (path: string, endpoint: string, handler: Middleware) => {
    doors.set(path, endpoint);
    router.all(path, bodyFirst, deps.admit.door(endpoint), handler);
  };

  const postOnly = (ctx: Context) => {
    if (ctx.method !== 'POST') {
      ctx.set('Allow', 'POST');
      throw new InvalidRequest('method not allowed', { status: 405, detail: `method ${ctx.method.slice(0, 16)}` });
    }
  };

  /** Method check and body parsing run inside the audited scope, so transport refusals are audited too. */
  const frontDoor =
    (via: FrontDoor, read: (ctx: Context) => Promise<Map<string, string[]>>, present: (response: TokenResponse) => object = (response) => response) =>
    async (ctx: Context) => {
      ctx.set('Cache-Control', 'no-store');
      ctx.set('Pragma', 'no-cache');
      const response = await deps.tokenEndpoint.handle(
        async () => {
          postOnly(ctx);
          return tokenRequestFrom(await read(ctx), ctx.get('authorization') || undefined, via);
        },
        ctx.state.requestId as string,
        via,
      );
      ctx.body = present(response);
    };

  if (deps.endpoints.token.enabled) {
    door(`${base}/token`, 'token', frontDoor('token', (ctx) => readFormBody(ctx, deps.maxBodyBytes)));
    // RFC 8414 metadata describes the OAuth token endpoint, so it is published with it.
    router.get(`/.well-known/oauth-authorization-server${base}`, (ctx) => {
      ctx.set('Cache-Control', 'public, max-age=300');
      ctx.body = deps.metadata;
    });
  }
  if (deps.endpoints.revocation.enabled) {
    // RFC 7009 §2.1: the token endpoint's transport (form body, size cap, one value per parameter).
    door(`${base}/revoke`, 'revoke', async (ctx) => {
      ctx.set('Cache-Control', 'no-store');
      ctx.set('Pragma', 'no-cache');
      await deps.revocationEndpoint.handle(async () => {
        postOnly(ctx);
        return tokenRequestFrom(await readFormBody(ctx, deps.maxBodyBytes), ctx.get('authorization') || undefined);
      }, ctx.state.requestId as string);
      // §2.2: the status says it all; the client ignores the body.
      ctx.body = {};
    });
  }
  if (deps.endpoints.introspection.enabled) {
    // RFC 7662 §2.1: a form POST like the token endpoint's; the answer describes a token, so it is never cached.
    door(`${base}/introspect`, 'introspect', async (ctx) => {
      ctx.set('Cache-Control', 'no-store');
      ctx.set('Pragma', 'no-cache');
      ctx.body = await deps.introspectionEndpoint.handle(async () => {
        postOnly(ctx);
        return tokenRequestFrom(await readFormBody(ctx, deps.maxBodyBytes), ctx.get('authorization') || undefined);
      }, ctx.state.requestId as string);
    });
  }
  if (deps.endpoints.jsonExchange.enabled) {
    door(
      `${base}${deps.endpoints.jsonExchange.path}`,
      'json-exchange',
      frontDoor('json-exchange', async (ctx) => {
        const parameters = await readJsonParameters(ctx, deps.maxBodyBytes);
        // This door speaks token exchange only; grant_type may be left out.
        const grantType = parameters.get('grant_type')?.[0];
        if (grantType === undefined) parameters.set('grant_type', [GRANT_TYPE_TOKEN_EXCHANGE]);
        else if (grantType !== GRANT_TYPE_TOKEN_EXCHANGE) throw new UnsupportedGrantType(undefined, { detail: 'json exchange: grant_type' });
        return parameters;
      }),
    );
  }
  const spiffe = deps.endpoints.spiffeExchange;
  if (spiffe.enabled) {
    door(
      `${base}${spiffe.path}`,
      'spiffe-exchange',
      frontDoor(
        'spiffe-exchange',
        async (ctx) => spiffeExchangeParameters(await readJsonParameters(ctx, deps.maxBodyBytes), spiffe, ctx.get('authorization') !== ''),
        spiffeExchangeResponse,
      ),
    );
  }
  if (deps.endpoints.metrics.enabled) {
    router.get(`${base}${deps.endpoints.metrics.path}`, async (ctx) => {
      const { contentType, body } = await deps.metrics.exposition();
      ctx.set('Cache-Control', 'no-store');
      ctx.type = contentType;
      ctx.body = body;
    });
  }
  if (deps.adminRevocations) mountAdminRoutes(router, base, deps.adminRevocations, deps.maxBodyBytes);
  router.get(`${base}/keys`, (ctx) => {
    ctx.set('Cache-Control', `public, max-age=${deps.jwksMaxAgeSeconds ?? 300}`);
    ctx.body = deps.keyRing.publicJwks();
  });
  router.get(`${base}/healthz`, (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { status: 'ok' };
  });
  // Liveness stays /healthz (200 while the process runs, also while draining); this one takes the
  // instance out of a load balancer's rotation before its listener closes.
  router.get(`${base}/readyz`, async (ctx) => {
    const state = deps.readiness();
    ctx.set('Cache-Control', 'no-store');
    if (state !== 'ready') {
      ctx.status = 503;
      ctx.body = { status: state };
      return;
    }
    const report = await runReadinessChecks(deps.readinessChecks);
    ctx.status = report.ready ? 200 : 503;
    ctx.body = { status: report.ready ? 'ready' : 'unavailable', checks: report.checks };
  });

  // First: under overload most requests end here, at the cost of little more than their HTTP parsing.
  app.use(deps.admit.shedEarly((path) => doors.get(path), deps.maxBodyBytes));
  app.use(traceRequests);
  app.use(async (ctx, next) => {
    ctx.set('X-Content-Type-Options', 'nosniff');
    await next();
    if (ctx.status === 404 && ctx.body === undefined) {
      ctx.status = 404;
      ctx.body = { error: 'not_found' };
    }
  });
  app.use(renderErrors(deps.log));
  app.use(router.routes());
  return app;
}
