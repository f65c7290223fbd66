/** True when a value matches the pattern. */
export type Matcher = (value: string) => boolean;

type Step = { readonly literal: string } | { readonly wildcard: 'label' | 'any' };

// `*` stays inside one dot-separated label of one side of the `@`; `**` may cross dots, never the `@`.
// So `*@my-project.iam.gserviceaccount.com` cannot match an account of another domain or project.
const STOPS_LABEL = new Set(['@', '.']);
const STOPS_ANY = new Set(['@']);

/**
 * Compiles a service-account email pattern, matched case-insensitively and anchored at both ends.
 * Runs in O(value × pattern) by tracking every pattern position at once: no regex, so no backtracking
 * on attacker-chosen emails.
 */
export function compileEmailPattern(pattern: string): Matcher {
  const normalized = pattern.toLowerCase();
  if (!normalized.includes('*')) return (value) => value.toLowerCase() === normalized;
  const steps: Step[] = [];
  const chars = Array.from(normalized);
  for (let index = 0; index < chars.length; index++) {
    if (chars[index] !== '*') steps.push({ literal: chars[index]! });
    else if (chars[index + 1] === '*') {
      steps.push({ wildcard: 'any' });
      index++;
    } else steps.push({ wildcard: 'label' });
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
    for (const char of value.toLowerCase()) {
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
        } else if (!(step.wildcard === 'label' ? STOPS_LABEL : STOPS_ANY).has(char)) {
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

/** Any of the patterns matches. */
export function compileEmailPatterns(patterns: readonly string[]): Matcher {
  const matchers = patterns.map(compileEmailPattern);
  return (value) => matchers.some((match) => match(value));
}
