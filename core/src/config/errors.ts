/** Invalid configuration: one readable line per problem, each naming the config path (and file:line when known). */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(readonly problems: readonly string[]) {
    super(problems.length === 1 ? problems[0] : `invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  }
}

export type ConfigPath = readonly PropertyKey[];

/** `['plugins', 1, 'config', 'issuers']` → `plugins[1].config.issuers`. */
export function formatPath(path: ConfigPath): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out || '(root)';
}

/** Finds where a config path is written, as `file:line`; undefined when the config did not come from a file. */
export type Locator = (path: ConfigPath) => string | undefined;

export interface ZodLikeIssue {
  readonly path: readonly PropertyKey[];
  readonly message: string;
  readonly code?: string;
  readonly keys?: readonly string[];
}

export function describeIssues(issues: readonly ZodLikeIssue[], prefix: ConfigPath, locate?: Locator): string[] {
  return issues.map((issue) => {
    const path = [...prefix, ...issue.path];
    // An unknown key is located at the key itself: in a merged config the map may span several files.
    const unknownKey = issue.code === 'unrecognized_keys' ? issue.keys?.[0] : undefined;
    const where = locate?.(unknownKey === undefined ? path : [...path, unknownKey]);
    return `${where ? `${where}: ` : ''}${formatPath(path)}: ${issue.message}`;
  });
}
