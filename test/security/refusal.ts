import { expect } from 'vitest';
import type { TokenCall } from '../e2e/support.js';
import { echoes } from './oracle.js';

/**
 * The four things every refusal in the catalogue is checked for: the status, the RFC error code, that no
 * token came back, and that nothing of the submitted tokens (or other secrets) is echoed.
 */
export function expectRefused(response: TokenCall, status: number, error: string, submitted: readonly string[] = []): void {
  expect([response.status, response.body.error], response.text).toEqual([status, error]);
  expect(response.body.access_token).toBeUndefined();
  expect(response.body.jwt_svid).toBeUndefined();
  expect(response.headers.get('cache-control')).toBe('no-store');
  for (const secret of submitted) expect(echoes(secret, response.text), 'echoes submitted token text').toBe(false);
}

/**
 * Another spelling of the same base64url bytes: sets one of the unused trailing bits of `segment`.
 * Undefined when the segment's length leaves no unused bits (a multiple of 4).
 */
export function respell(segment: string): string | undefined {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  if (segment.length % 4 === 0 || segment.length % 4 === 1) return undefined;
  const last = alphabet.indexOf(segment.at(-1)!);
  return segment.slice(0, -1) + alphabet[last | 1];
}

/** The token with segment `index` respelled, if it has unused bits. */
export function respellToken(token: string, index: number): string | undefined {
  const segments = token.split('.');
  const changed = respell(segments[index]!);
  if (changed === undefined) return undefined;
  segments[index] = changed;
  return segments.join('.');
}
