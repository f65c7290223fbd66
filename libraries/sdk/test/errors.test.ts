import { describe, expect, it } from 'vitest';
import {
  InvalidClient,
  InvalidGrant,
  InvalidRequest,
  InvalidScope,
  InvalidTarget,
  InvalidToken,
  OAuthError,
  ServerError,
  TemporarilyUnavailable,
  UnauthorizedClient,
  UnsupportedGrantType,
} from '../src/index.js';

describe('OAuth errors', () => {
  it.each([
    [new InvalidRequest(), 'invalid_request', 400],
    [new InvalidClient(), 'invalid_client', 401],
    [new InvalidGrant(), 'invalid_grant', 400],
    [new UnauthorizedClient(), 'unauthorized_client', 400],
    [new UnsupportedGrantType(), 'unsupported_grant_type', 400],
    [new InvalidScope(), 'invalid_scope', 400],
    [new InvalidTarget(), 'invalid_target', 400],
    [new ServerError(), 'server_error', 500],
    [new TemporarilyUnavailable(), 'temporarily_unavailable', 503],
  ] as const)('%s has the RFC code and status', (error, code, status) => {
    expect(error).toBeInstanceOf(OAuthError);
    expect(error.code).toBe(code);
    expect(error.status).toBe(status);
    expect(error.description).toMatch(/^[\x20\x21\x23-\x5b\x5d-\x7e]+$/);
  });

  it('invalid_client always carries a challenge; 503 carries Retry-After', () => {
    expect(new InvalidClient().headers['WWW-Authenticate']).toBe('Basic realm="tessera"');
    expect(new TemporarilyUnavailable(undefined, { retryAfterSeconds: 7 }).headers['Retry-After']).toBe('7');
  });

  it('keeps detail apart from the fixed description', () => {
    const error = InvalidRequest.subjectToken('signature');
    expect(error.description).toBe('subject_token is invalid or not acceptable');
    expect(error.detail).toBe('signature');
    expect(error.message).not.toContain('signature');
  });

  it('refuses descriptions a client could not safely receive (RFC 6749 §5.2 charset)', () => {
    expect(() => new InvalidRequest('bad "quote"')).toThrow(TypeError);
    expect(() => new InvalidRequest('back\\slash')).toThrow(TypeError);
    expect(() => new InvalidRequest('newline\n')).toThrow(TypeError);
  });

  it('InvalidToken is an invalid_request with a machine-readable reason', () => {
    const error = new InvalidToken('expired', 'exp');
    expect(error).toBeInstanceOf(InvalidRequest);
    expect(error.reason).toBe('expired');
    expect(error.detail).toBe('expired: exp');
  });
});
