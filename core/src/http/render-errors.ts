import type { Context, Next } from 'koa';
import { OAuthError, ServerError, type Logger } from '@tessera/plugin-sdk';

/**
 * The one place errors become responses: RFC 6749 §5.2 JSON with the fixed description. Anything that is
 * not an OAuthError is logged and answered with a bare `server_error`.
 */
export function renderErrors(log: Logger) {
  return async (ctx: Context, next: Next): Promise<void> => {
    try {
      await next();
    } catch (caught) {
      let error: OAuthError;
      if (caught instanceof OAuthError) {
        error = caught;
      } else {
        log.error({ err: caught, requestId: ctx.state.requestId as string }, 'unhandled error');
        error = new ServerError();
      }
      ctx.status = error.status;
      ctx.set(error.headers as Record<string, string>);
      ctx.set('Cache-Control', 'no-store');
      ctx.set('Pragma', 'no-cache');
      ctx.body = { error: error.code, error_description: error.description };
    }
  };
}
