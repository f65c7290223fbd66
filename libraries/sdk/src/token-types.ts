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
/** draft-ietf-oauth-spiffe-client-auth: client authentication with a JWT-SVID. */
export const CLIENT_ASSERTION_TYPE_JWT_SPIFFE = 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe';

/**
 * JWT-SVIDs have no registered token type URN. Tessera's own, used for subject, actor and issued tokens;
 * `urn:starfly:token-type:spiffe-svid` is accepted as an alias for Starfly clients.
 */
export const TOKEN_TYPE_JWT_SVID = 'urn:tessera:token-type:jwt-svid' satisfies TokenTypeUrn;
export const TOKEN_TYPE_STARFLY_SPIFFE_SVID = 'urn:starfly:token-type:spiffe-svid' satisfies TokenTypeUrn;
