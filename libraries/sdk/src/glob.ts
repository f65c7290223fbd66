/** True when a value matches a compiled pattern. */
export type Matcher = (value: string) => boolean;

export interface GlobOptions {
  /** Characters a single `*` does not cross (e.g. `/` for one path segment). */
  readonly segmentStops: ReadonlySet<string>;
  /** Characters not even `**` crosses (e.g. `?` and `#`, so a wildcard never reaches into a query). */
  readonly anyStops: ReadonlySet<string>;
  /** Compare case-insensitively (identifiers such as emails and Azure resource ids). */
  readonly ignoreCase?: boolean;
}

type Step = { readonly literal: string } | { readonly wildcard: 'segment' | 'any' };

/**
 * Compiles an anchored glob: `*` matches any run without a segment stop, `**` any run without an any
 * stop; every other character is literal. Matching runs in O(value × pattern) by tracking every pattern
 * position at once: no regex, so no backtracking on attacker-chosen values.
 */
export function compileGlob(pattern: string, options: GlobOptions): Matcher {
  const fold = options.ignoreCase ? (text: string) => text.toLowerCase() : (text: string) => text;
  const normalized = fold(pattern);
  if (!normalized.includes('*')) return (value) => fold(value) === normalized;
  const chars = Array.from(normalized); // code points, as values are read
  const steps: Step[] = [];
  for (let index = 0; index < chars.length; index++) {
    if (chars[index] !== '*') steps.push({ literal: chars[index]! });
    else if (chars[index + 1] === '*') {
      steps.push({ wildcard: 'any' });
      index++;
    } else steps.push({ wildcard: 'segment' });
  }
  const size = steps.length;
  // A wildcard may match nothing: being at it also means being just past it.
  const close = (active: Uint8Array) => {
    for (let position = 0; position < size; position++) if (active[position] && 'wildcard' in steps[position]!) active[position + 1] = 1;
  };
  return (value) => {
    let active = new Uint8Array(size + 1);
    active[0] = 1;
    close(active);
    for (const char of fold(value)) {
      const next = new Uint8Array(size + 1);
      let alive = false;
      for (let position = 0; position < size; position++) {
        if (!active[position]) continue;
        const step = steps[position]!;
        if ('literal' in step) {
          if (step.literal === char) {
            next[position + 1] = 1;
            alive = true;
          }
        } else if (!(step.wildcard === 'segment' ? options.segmentStops : options.anyStops).has(char)) {
          next[position] = 1;
          alive = true;
        }
      }
      if (!alive) return false;
      close(next);
      active = next;
    }
    return active[size] === 1;
  };
}
