import { OAuthError, TemporarilyUnavailable } from '@tessera/plugin-sdk';

/**
 * Awaits a store call; any failure becomes a 503 with `Retry-After`. Nothing that depends on shared state
 * may be decided without it: an error here must never read as "not seen" or "not revoked".
 */
export async function storeAnswer<T>(call: Promise<T>, what: string): Promise<T> {
  try {
    return await call;
  } catch (error) {
    if (error instanceof OAuthError) throw error;
    throw new TemporarilyUnavailable(undefined, { detail: `store: ${what} unavailable`, cause: error });
  }
}
