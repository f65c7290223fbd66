import { compileGlob, type Matcher } from '@tessera/plugin-sdk';

export type { Matcher } from '@tessera/plugin-sdk';

// `*` stays inside one dot-separated label of one side of the `@`; `**` may cross dots, never the `@`.
// So `*@my-project.iam.gserviceaccount.com` cannot match an account of another domain or project.
const EMAIL_GLOB = { segmentStops: new Set(['@', '.']), anyStops: new Set(['@']), ignoreCase: true };

/** Compiles a service-account email pattern, matched case-insensitively and anchored at both ends. */
export function compileEmailPattern(pattern: string): Matcher {
  return compileGlob(pattern, EMAIL_GLOB);
}

/** Any of the patterns matches. */
export function compileEmailPatterns(patterns: readonly string[]): Matcher {
  const matchers = patterns.map(compileEmailPattern);
  return (value) => matchers.some((match) => match(value));
}
