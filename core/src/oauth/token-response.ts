/** RFC 6749 §5.1 / RFC 8693 §2.2.1 success body. */
export interface TokenResponse {
  readonly access_token: string;
  readonly issued_token_type?: string;
  readonly token_type: string;
  readonly expires_in: number;
  readonly scope?: string;
}
