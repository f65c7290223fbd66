// `matches` on RE2, linear in the input, instead of cel-js's backtracking RegExp: a literal pattern is
// compiled and sized at load, a pattern computed at run time is bounded before it is compiled, and cached.

import { EvaluationError } from '@marcbachmann/cel-js';
import { RE2JS, RE2JSException } from 're2js';
import { ConditionCompileError, where } from './condition-compile-error.js';
import { CONDITION_LIMITS } from './condition-limits.js';

/**
 * cel-js's `string.matches` runs a backtracking JS RegExp (`(a+)+$` on 28 characters: 18 s), and its overload
 * can be neither replaced nor removed (registering it again "overlaps"). Before type-checking, `bindFunctions`
 * renames every `x.matches(p)` call to this overload, which runs RE2: linear in the input, RE2 syntax as CEL
 * specifies. cel-js resolves a call's overloads from its name during check() and dispatches through them at run
 * time, so the renamed call never reaches the built-in. Not a name the parser can produce: a condition cannot
 * call it directly.
 */
export const RE2_MATCHES = 'matches:re2';

/** A `matches` pattern written as a literal: compiled once, when the condition loads, and costed exactly. */
export class CelRegex {
  constructor(
    readonly regex: RE2JS,
    readonly instructions: number,
  ) {}
}

export function literalRegex(pattern: string, source: string, offset: number): CelRegex {
  try {
    const regex = RE2JS.compile(pattern);
    return new CelRegex(regex, programSize(regex));
  } catch (error) {
    if (!(error instanceof RE2JSException)) throw error;
    // The pattern is policy text, so its RE2 message (which quotes the bad part) may be shown.
    const reason = error.message.replace(/^error parsing regexp: /, '');
    throw new ConditionCompileError(`invalid regular expression: ${reason} ${where(source, offset)}`);
  }
}

/**
 * Instructions in the compiled program: what RE2's matchers step through per input character. re2js exposes
 * it only through `re2().prog`; if that ever changes, the size is unknown (Infinity) and the condition fails
 * safe: refused at load (literal) or failed closed (computed pattern).
 */
function programSize(regex: RE2JS): number {
  const program: unknown = regex.re2().prog;
  const size: unknown = (program as { numInst?: () => unknown } | undefined)?.numInst?.();
  return typeof size === 'number' && Number.isFinite(size) ? size : Infinity;
}

/**
 * A pattern computed at run time: attacker-influenced, so bounded before it is compiled. Counted repetition
 * (`{n,m}`) is refused: it is what lets a short pattern compile to a huge program (`.{1000}` × 146 in 1022
 * characters: 146,002 instructions, 150 ms to compile). Without it a program has at most about 2 instructions
 * per pattern character (1.75 in fuzzing); `maxRuntimeProgram` is what the cost estimate assumes, checked
 * after compiling.
 */
const COUNTED_REPETITION = /\{\d/;
const RUNTIME_REGEX_CACHE_SIZE = 64;
const runtimeRegexes = new Map<string, RE2JS | string>();

export function maxRuntimeProgram(patternLength: number): number {
  return 2 * patternLength + 2;
}

export function runtimeRegex(pattern: string): RE2JS {
  // The codes become the evaluation error (see #describe), which names the call, never the pattern.
  if (pattern.length > CONDITION_LIMITS.maxPatternLength) throw new EvaluationError({ code: 'regular_expression_too_long', message: 'regular expression too long' });
  let entry = runtimeRegexes.get(pattern);
  if (entry === undefined) {
    entry = compileRuntimeRegex(pattern);
    if (runtimeRegexes.size >= RUNTIME_REGEX_CACHE_SIZE) runtimeRegexes.delete(runtimeRegexes.keys().next().value!);
  } else {
    runtimeRegexes.delete(pattern); // most recently used last
  }
  runtimeRegexes.set(pattern, entry);
  if (typeof entry === 'string') throw new EvaluationError({ code: entry, message: entry.replaceAll('_', ' ') });
  return entry;
}

function compileRuntimeRegex(pattern: string): RE2JS | string {
  if (COUNTED_REPETITION.test(pattern)) return 'regular_expression_too_complex';
  let regex: RE2JS;
  try {
    regex = RE2JS.compile(pattern);
  } catch (error) {
    if (error instanceof RE2JSException) return 'invalid_regular_expression';
    throw error;
  }
  return programSize(regex) <= maxRuntimeProgram(pattern.length) ? regex : 'regular_expression_too_complex';
}
