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
 * Matching runs in O(value × pattern) by simulating all pattern positions at once: no regex, so no
 * catastrophic backtracking on attacker-chosen audiences.
 */
export type Matcher = (value: string) => boolean;

type Step = { readonly literal: string } | { readonly wildcard: 'segment' | 'any' };

const STOPS_SEGMENT = new Set(['/', '?', '#', '\\']);
const STOPS_ANY = new Set(['?', '#', '\\']);

function parse(pattern: string): Step[] {
  const chars = Array.from(pattern); // code points, as values are read
  const steps: Step[] = [];
  for (let index = 0; index < chars.length; index++) {
    if (chars[index] !== '*') steps.push({ literal: chars[index]! });
    else if (chars[index + 1] === '*') {
      steps.push({ wildcard: 'any' });
      index++;
    } else steps.push({ wildcard: 'segment' });
  }
  return steps;
}

export function compilePattern(pattern: string): Matcher {
  if (!pattern.includes('*')) return (value) => value === pattern;
  const steps = parse(pattern);
  const size = steps.length;
  // A wildcard may match nothing: being at it also means being just past it.
  const close = (active: Uint8Array) => {
    for (let position = 0; position < size; position++) if (active[position] && 'wildcard' in steps[position]!) active[position + 1] = 1;
  };
  return (value) => {
    let active = new Uint8Array(size + 1);
    active[0] = 1;
    close(active);
    for (const char of value) {
      const next = new Uint8Array(size + 1);
      let any = false;
      for (let position = 0; position < size; position++) {
        if (!active[position]) continue;
        const step = steps[position]!;
        if ('literal' in step) {
          if (step.literal === char) {
            next[position + 1] = 1;
            any = true;
          }
        } else if (!(step.wildcard === 'segment' ? STOPS_SEGMENT : STOPS_ANY).has(char)) {
          next[position] = 1;
          any = true;
        }
      }
      if (!any) return false;
      close(next);
      active = next;
    }
    return active[size] === 1;
  };
}

/** Undefined list = no constraint; otherwise at least one pattern must match. */
export function compilePatternList(patterns: readonly string[] | undefined): Matcher | undefined {
  if (patterns === undefined) return undefined;
  const matchers = patterns.map(compilePattern);
  return (value) => matchers.some((match) => match(value));
}
