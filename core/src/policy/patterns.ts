/**
 * Pattern semantics used everywhere in policy:
 * - no `*`: the value must be exactly equal;
 * - `*` matches any run of characters except `/`, `?` and `#` (one path segment or part of one);
 * - `**` matches any run of characters except `?` and `#` (`/` included).
 * Neither wildcard crosses into a query or fragment, so `https://*.example.com` cannot match
 * `https://evil.test?.example.com`; a query must be written out literally.
 * Patterns are always anchored at both ends; every other character is literal (no regex).
 */
export type Matcher = (value: string) => boolean;

export function compilePattern(pattern: string): Matcher {
  if (!pattern.includes('*')) return (value) => value === pattern;
  const source = pattern
    .split(/(\*\*|\*)/)
    .map((part) => (part === '**' ? '[^?#]*' : part === '*' ? '[^/?#]*' : part.replace(/[.+?^${}()|[\]\\/-]/g, '\\$&')))
    .join('');
  const regex = new RegExp(`^${source}$`, 's');
  return (value) => regex.test(value);
}

/** Undefined list = no constraint; otherwise at least one pattern must match. */
export function compilePatternList(patterns: readonly string[] | undefined): Matcher | undefined {
  if (patterns === undefined) return undefined;
  const matchers = patterns.map(compilePattern);
  return (value) => matchers.some((match) => match(value));
}
