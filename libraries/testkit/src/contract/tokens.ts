/** Inputs no validator may accept or crash on: not tokens, almost tokens, and hostile shapes. */
export const GARBAGE_TOKENS: readonly string[] = [
  'x',
  'not a token',
  'a.b.c',
  '..',
  '....',
  'eyJhbGciOiJub25lIn0.e30.',
  'eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0.',
  'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl',
  'eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln',
  'e30.e30.e30',
  '{"alg":"none"}',
  'Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2ln',
  '\u0000\u0001\u0002',
  'é.é.é',
  '\uD800.\uDFFF.x',
  'A'.repeat(70_000),
  `${'eyJ'.repeat(1_000)}.${'a'.repeat(1_000)}.${'b'.repeat(1_000)}`,
];

/** Flips bits in the middle of a compact JWS signature (not its last character, whose low bits may be padding). */
export function tamperJwsSignature(token: string): string {
  const parts = token.split('.');
  const signature = Buffer.from(parts[2] ?? '', 'base64url');
  if (signature.length === 0) throw new Error('tamperJwsSignature: not a signed compact JWS');
  signature[Math.floor(signature.length / 2)]! ^= 0x55;
  parts[2] = signature.toString('base64url');
  return parts.join('.');
}

/**
 * Pieces of `token` found in `texts`: the whole token, or any 16-character window of a segment of it.
 * Errors, responses and audit records may name claims and reasons, never carry token material.
 */
export function leakedFragments(token: string, texts: readonly string[]): string[] {
  const haystack = texts.join('\n');
  const leaks: string[] = [];
  if (token.length >= 8 && haystack.includes(token)) leaks.push(token.slice(0, 24));
  for (const segment of token.split('.')) {
    for (let start = 0; start + 16 <= segment.length; start += 8) {
      const window = segment.slice(start, start + 16);
      if (haystack.includes(window)) {
        leaks.push(window);
        break;
      }
    }
  }
  return leaks;
}
