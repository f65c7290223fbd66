/** Error codes of RFC 6749 §5.2 and RFC 8693 §2.2.2, plus `temporarily_unavailable` for upstream outages. */
export type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'invalid_scope'
  | 'invalid_target'
  | 'server_error'
  | 'temporarily_unavailable';

export interface OAuthErrorOptions {
  /** Specifics for the audit record and logs only: name the claim or rule, never a token or claim value. */
  readonly detail?: string;
  /** Overrides the code's default HTTP status (e.g. 413 for an oversized body). */
  readonly status?: number;
  readonly headers?: Readonly<Record<string, string>>;
  readonly cause?: unknown;
}

// RFC 6749 §5.2: error_description is printable ASCII without `"` and `\`.
const DESCRIPTION_CHARS = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/**
 * Base of every error a client may see. `description` is fixed text chosen by the code that throws;
 * `detail` never leaves the broker.
 */
export abstract class OAuthError extends Error {
  abstract readonly code: OAuthErrorCode;
  readonly status: number;
  readonly description: string;
  readonly detail: string | undefined;
  readonly headers: Readonly<Record<string, string>>;

  protected constructor(description: string, defaultStatus: number, options: OAuthErrorOptions = {}) {
    super(description, options.cause === undefined ? undefined : { cause: options.cause });
    if (!DESCRIPTION_CHARS.test(description)) throw new TypeError('OAuth error descriptions must be printable ASCII without quotes or backslashes');
    this.name = new.target.name;
    this.description = description;
    this.status = options.status ?? defaultStatus;
    this.detail = options.detail;
    this.headers = options.headers ?? {};
  }
}

export class InvalidRequest extends OAuthError {
  readonly code = 'invalid_request' as const;
  constructor(description = 'invalid request', options?: OAuthErrorOptions) {
    super(description, 400, options);
  }
  /** RFC 8693 §2.2.2: the subject token is invalid or unacceptable. */
  static subjectToken(detail?: string): InvalidRequest {
    return new InvalidRequest('subject_token is invalid or not acceptable', { detail });
  }
  /** RFC 8693 §2.2.2: the actor token is invalid or unacceptable. */
  static actorToken(detail?: string): InvalidRequest {
    return new InvalidRequest('actor_token is invalid or not acceptable', { detail });
  }
  /** Policy refused the request (RFC 8693 §2.2.2: "unacceptable based on policy"). */
  static policy(detail?: string): InvalidRequest {
    return new InvalidRequest('request not allowed by policy', { detail });
  }
}

/** Client authentication failed (RFC 6749 §5.2). Always 401 with a `WWW-Authenticate` challenge. */
export class InvalidClient extends OAuthError {
  readonly code = 'invalid_client' as const;
  constructor(description = 'client authentication failed', options?: OAuthErrorOptions) {
    super(description, 401, { ...options, headers: { 'WWW-Authenticate': 'Basic realm="tessera"', ...options?.headers } });
  }
}

export class InvalidGrant extends OAuthError {
  readonly code = 'invalid_grant' as const;
  constructor(description = 'assertion is invalid', options?: OAuthErrorOptions) {
    super(description, 400, options);
  }
}

export class UnauthorizedClient extends OAuthError {
  readonly code = 'unauthorized_client' as const;
  constructor(description = 'client is not allowed this grant type', options?: OAuthErrorOptions) {
    super(description, 400, options);
  }
}

export class UnsupportedGrantType extends OAuthError {
  readonly code = 'unsupported_grant_type' as const;
  constructor(description = 'grant_type is not supported', options?: OAuthErrorOptions) {
    super(description, 400, options);
  }
}

export class InvalidScope extends OAuthError {
  readonly code = 'invalid_scope' as const;
  constructor(description = 'requested scope is not allowed', options?: OAuthErrorOptions) {
    super(description, 400, options);
  }
}

/** RFC 8693 §2.2.2: the broker will not issue for the requested audience or resource. */
export class InvalidTarget extends OAuthError {
  readonly code = 'invalid_target' as const;
  constructor(description = 'requested audience or resource is not allowed', options?: OAuthErrorOptions) {
    super(description, 400, options);
  }
}

export class ServerError extends OAuthError {
  readonly code = 'server_error' as const;
  constructor(description = 'internal error', options?: OAuthErrorOptions) {
    super(description, 500, options);
  }
}

/** An upstream the broker depends on (JWKS, STS, SPIRE agent) is unreachable: 503 with `Retry-After`. */
export class TemporarilyUnavailable extends OAuthError {
  readonly code = 'temporarily_unavailable' as const;
  constructor(description = 'temporarily unavailable, retry later', options: OAuthErrorOptions & { retryAfterSeconds?: number } = {}) {
    super(description, 503, { ...options, headers: { 'Retry-After': String(options.retryAfterSeconds ?? 5), ...options.headers } });
  }
}

/** Why a validator refused a token. Goes to the audit record, never to the client. */
export type TokenRejection =
  | 'malformed'
  | 'too_large'
  | 'untrusted_issuer'
  | 'algorithm'
  | 'unknown_key'
  | 'signature'
  | 'expired'
  | 'not_yet_valid'
  | 'audience'
  | 'claims'
  | 'type'
  | 'lifetime';

/**
 * Thrown by validators for anything wrong with a presented token. The broker turns it into the error
 * the role calls for: `invalid_request` for subject and actor tokens (RFC 8693 §2.2.2) and
 * `invalid_grant` for a JWT bearer assertion (RFC 7523 §3.1).
 */
export class InvalidToken extends InvalidRequest {
  readonly reason: TokenRejection;
  constructor(reason: TokenRejection, detail?: string, options?: Omit<OAuthErrorOptions, 'detail'>) {
    super('token is invalid', { ...options, detail: detail ? `${reason}: ${detail}` : reason });
    this.reason = reason;
  }
}
