// ConditionCompileError and `where`, the position its messages give. Apart from conditions.ts so that the
// RE2 overload can refuse an invalid literal pattern at load without an import cycle.

/**
 * A `when:` expression that failed to parse or type-check, or that is over a limit (length, size, cost). The
 * message names the problem and its line and column.
 */
export class ConditionCompileError extends Error {
  override readonly name = 'ConditionCompileError';
}

export function where(source: string, offset: number): string {
  const before = source.slice(0, offset);
  const line = before.split('\n').length;
  const column = offset - before.lastIndexOf('\n');
  return `(line ${line}, column ${column})`;
}
