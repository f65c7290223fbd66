import { randomUUID } from 'node:crypto';
import Router from '@koa/router';
import Koa from 'koa';
import { InvalidRequest, type KeyRing, type Logger } from '@tessera/plugin-sdk';
import type { TokenEndpoint } from '../oauth/token-endpoint.js';
import { tokenRequestFrom } from '../oauth/request.js';
import { readFormBody } from './form-body.js';
import { renderErrors } from './render-errors.js';

export interface HttpAppDeps {
  readonly tokenEndpoint: TokenEndpoint;
  readonly keyRing: KeyRing;
  readonly metadata: Record<string, unknown>;
  readonly log: Logger;
  /** Path of the issuer URL: routes live under it, and RFC 8414 §3 inserts the well-known part before it. */
  readonly basePath: string;
  readonly maxBodyBytes: number;
}

/** HTTP surface: transport rules only. Everything OAuth happens in the token endpoint. */
export function createHttpApp(deps: HttpAppDeps): Koa {
  const app = new Koa({ proxy: false });
  app.silent = true;
  const base = deps.basePath === '/' ? '' : deps.basePath.replace(/\/$/, '');
  const router = new Router();

  router.all(`${base}/token`, async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Pragma', 'no-cache');
    ctx.body = await deps.tokenEndpoint.handle(async () => {
      if (ctx.method !== 'POST') {
        ctx.set('Allow', 'POST');
        throw new InvalidRequest('method not allowed', { status: 405, detail: `method ${ctx.method.slice(0, 16)}` });
      }
      const parameters = await readFormBody(ctx, deps.maxBodyBytes);
      return tokenRequestFrom(parameters, ctx.get('authorization') || undefined);
    }, ctx.state.requestId as string);
  });

  const metadataPath = `/.well-known/oauth-authorization-server${base}`;
  router.get(metadataPath, (ctx) => {
    ctx.set('Cache-Control', 'public, max-age=300');
    ctx.body = deps.metadata;
  });
  router.get(`${base}/keys`, (ctx) => {
    ctx.set('Cache-Control', 'public, max-age=300');
    ctx.body = deps.keyRing.publicJwks();
  });
  router.get(`${base}/healthz`, (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { status: 'ok' };
  });

  app.use(async (ctx, next) => {
    ctx.state.requestId = randomUUID();
    ctx.set('X-Request-Id', ctx.state.requestId as string);
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
