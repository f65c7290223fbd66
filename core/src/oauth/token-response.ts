import type { Grant, IssuedToken } from '@tessera/plugin-sdk';

/** RFC 6749 §5.1 / RFC 8693 §2.2.1 success body. */
export interface TokenResponse {
  readonly access_token: string;
  readonly issued_token_type?: string;
  readonly token_type: string;
  readonly expires_in: number;
  readonly scope?: string;
}

/**
 * RFC 6749 §5.1 body; with `exchange`, also RFC 8693 §2.2.1's `issued_token_type`. `scope` is sent
 * whenever something was granted (RFC 8693 requires it when it differs from the request).
 */
export function tokenResponse(grant: Grant, issued: IssuedToken, options: { exchange: boolean }): TokenResponse {
  return {
    access_token: issued.token,
    ...(options.exchange ? { issued_token_type: issued.issuedTokenType } : {}),
    token_type: issued.tokenType,
    expires_in: issued.expiresIn,
    ...(grant.scopes.length > 0 ? { scope: grant.scopes.join(' ') } : {}),
  };
}
