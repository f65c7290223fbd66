// `duration()` behind a length bound, as cel-js's own parser backtracks.

import { Environment, EvaluationError } from '@marcbachmann/cel-js';
import { CONDITION_LIMITS } from './condition-limits.js';

/** cel-js's `duration()` parses with an unanchored backtracking pattern, cubic in the string; same treatment as `RE2_MATCHES`. */
export const BOUNDED_DURATION = 'duration:bounded';

// Only parses `duration(text)`: calling the built-in keeps cel-js's exact duration syntax.
const builtinDuration = new Environment().registerVariable('text', 'string').parse('duration(text)');
builtinDuration.check();

export function boundedDuration(text: string): unknown {
  if (text.length > CONDITION_LIMITS.maxDurationLength) throw new EvaluationError({ code: 'invalid_duration', message: 'duration string is too long' });
  try {
    return builtinDuration({ text });
  } catch (error) {
    // The built-in's error points into its own source and quotes the input: keep only the code.
    if (error instanceof EvaluationError) throw new EvaluationError({ code: error.code, message: 'invalid duration string' });
    throw error;
  }
}
