/** Shortest run of submitted token text whose reappearance in a response counts as an echo. */
export const ECHO_WINDOW = 12;

/**
 * True when `text` contains any run of ECHO_WINDOW characters from a segment of `token` (split on `.`).
 * Error descriptions are fixed and `detail` never leaves the broker, so no token content may come back.
 */
export function echoes(token: string, text: string): boolean {
  if (text.length < ECHO_WINDOW) return false;
  const windows = new Set<string>();
  for (let index = 0; index + ECHO_WINDOW <= text.length; index++) windows.add(text.slice(index, index + ECHO_WINDOW));
  for (const segment of token.split('.')) {
    for (let index = 0; index + ECHO_WINDOW <= segment.length; index++) {
      if (windows.has(segment.slice(index, index + ECHO_WINDOW))) return true;
    }
  }
  return false;
}

/** RFC 6749 §5.2 error codes, plus RFC 8693 §2.2.2 `invalid_target`. */
export const OAUTH_ERROR_CODES: ReadonlySet<string> = new Set([
  'invalid_request',
  'invalid_client',
  'invalid_grant',
  'unauthorized_client',
  'unsupported_grant_type',
  'invalid_scope',
  'invalid_target',
]);
