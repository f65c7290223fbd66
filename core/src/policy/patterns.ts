import { compileGlob, type Matcher } from '@tessera/plugin-sdk';

export type { Matcher } from '@tessera/plugin-sdk';

const POLICY_GLOB = { segmentStops: new Set(['/', '?', '#', '\\']), anyStops: new Set(['?', '#', '\\']) };

/**
 * Pattern semantics used everywhere in policy:
 * - no `*`: the value must be exactly equal;
 * - `*` matches any run of characters except `/`, `?`, `#` and `\` (one path segment or part of one);
 * - `**` matches any run of characters except `?`, `#` and `\` (`/` included).
 * Neither wildcard crosses into a query or fragment, so `https://*.example.com` cannot match
 * `https://evil.test?.example.com`; a query must be written out literally. `\` is excluded because URL
 * parsers read it as `/`.
 * Patterns are always anchored at both ends; every other character is literal.
 *
 * Matching (`compileGlob` in the SDK, shared with plugins) runs in O(value × pattern): no regex, so no
 * catastrophic backtracking on attacker-chosen audiences.
 */
export function compilePattern(pattern: string): Matcher {
  return compileGlob(pattern, POLICY_GLOB);
}

/** Undefined list = no constraint; otherwise at least one pattern must match. */
export function compilePatternList(patterns: readonly string[] | undefined): Matcher | undefined {
  if (patterns === undefined) return undefined;
  const matchers = patterns.map(compilePattern);
  return (value) => matchers.some((match) => match(value));
}
