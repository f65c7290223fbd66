import type Router from '@koa/router';
import type { Context } from 'koa';
import { InvalidRequest } from '@tessera/plugin-sdk';
import type { AdminAction, AdminRevocationsEndpoint } from '../state/kill-switch-admin.js';
import { readBodyText } from './body-text.js';

/** Where the kill-switch admin API lives under the issuer's path. */
export const ADMIN_REVOCATIONS_PATH = '/admin/revocations';

const ACTIONS: Readonly<Record<string, AdminAction>> = { GET: 'revocation.list', POST: 'revocation.create', DELETE: 'revocation.delete' };

/**
 * `GET` lists, `POST` (JSON entry) creates, `DELETE ?kind=&value=[&issuer=]` removes. Mounted only when
 * `admin.clients` names someone; every method authenticates before anything else happens.
 */
export function mountAdminRoutes(router: Router, base: string, endpoint: AdminRevocationsEndpoint, maxBodyBytes: number): void {
  router.all(`${base}${ADMIN_REVOCATIONS_PATH}`, async (ctx: Context) => {
    ctx.set('Cache-Control', 'no-store');
    const action = ACTIONS[ctx.method];
    if (!action) {
      ctx.set('Allow', Object.keys(ACTIONS).join(', '));
      throw new InvalidRequest('method not allowed', { status: 405, detail: `admin: method ${ctx.method.slice(0, 16)}` });
    }
    const body = await endpoint.handle(
      action,
      async () => ({
        authorization: ctx.get('authorization') || undefined,
        ...(action === 'revocation.create' ? { fields: await readJsonObject(ctx, maxBodyBytes) } : {}),
        ...(action === 'revocation.delete' ? { fields: queryFields(ctx) } : {}),
      }),
      ctx.state.requestId as string,
    );
    ctx.status = action === 'revocation.create' ? 201 : 200;
    ctx.body = body;
  });
}

async function readJsonObject(ctx: Context, maxBytes: number): Promise<Record<string, unknown>> {
  if (!ctx.request.is('application/json')) throw new InvalidRequest('content type must be application/json', { status: 415, detail: 'admin: content type' });
  let body: unknown;
  try {
    body = JSON.parse(await readBodyText(ctx, maxBytes));
  } catch (error) {
    if (error instanceof InvalidRequest) throw error;
    throw new InvalidRequest('request body is not valid JSON', { detail: 'admin: json syntax' });
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new InvalidRequest('request body must be a JSON object', { detail: 'admin: json shape' });
  return body as Record<string, unknown>;
}

function queryFields(ctx: Context): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  for (const name of ['kind', 'value', 'issuer']) {
    const value = ctx.query[name];
    if (Array.isArray(value)) throw new InvalidRequest('a parameter is repeated', { detail: `admin: repeated ${name}` });
    if (value !== undefined) fields[name] = value;
  }
  return fields;
}
