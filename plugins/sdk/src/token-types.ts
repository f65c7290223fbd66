import type { TokenTypeUrn } from './contracts.js';

// RFC 8693 §3: token type identifiers.
export const TOKEN_TYPE_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token' satisfies TokenTypeUrn;
export const TOKEN_TYPE_REFRESH_TOKEN = 'urn:ietf:params:oauth:token-type:refresh_token' satisfies TokenTypeUrn;
export const TOKEN_TYPE_ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token' satisfies TokenTypeUrn;
/** RFC 7519 §9 / RFC 8693 §3: any JWT. */
export const TOKEN_TYPE_JWT = 'urn:ietf:params:oauth:token-type:jwt' satisfies TokenTypeUrn;

/** RFC 8693 §2.1. */
export const GRANT_TYPE_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
/** RFC 7523 §2.1. */
export const GRANT_TYPE_JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
/** RFC 6749 §4.4. */
export const GRANT_TYPE_CLIENT_CREDENTIALS = 'client_credentials';

/** RFC 7523 §2.2: client authentication with a JWT assertion (`private_key_jwt`). */
export const CLIENT_ASSERTION_TYPE_JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
