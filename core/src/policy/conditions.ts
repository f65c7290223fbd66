import vm from 'node:vm';
import { Environment, EvaluationError, ParseError, TypeError as CelTypeError, type ASTNode, type ParseResult } from '@marcbachmann/cel-js';
import { RE2JS, RE2JSException } from 're2js';

/** Values a condition sees. Every field is always present (empty string / empty list / present:false when absent). */
export interface ConditionIdentity {
  readonly issuer: string;
  readonly subject: string;
  readonly tokenType: string;
  /** Name of the plugin that verified it ('' if none). */
  readonly validator: string;
  readonly audiences: readonly string[];
  /** CEL timestamp. Use `new Date(0)` when absent: an invalid Date makes every evaluation fail. */
  readonly expiresAt: Date;
  readonly attributes: Readonly<Record<string, string | readonly string[]>>;
  /** Arbitrary JSON. */
  readonly claims: Readonly<Record<string, unknown>>;
}

export interface ConditionInput {
  readonly client: { readonly id: string; readonly authMethod: string; readonly spiffeId: string };
  readonly subject: ConditionIdentity;
  readonly actor: ConditionIdentity & { readonly present: boolean };
  readonly request: {
    readonly grantType: string;
    readonly endpoint: string;
    readonly requestedTokenType: string;
    readonly audiences: readonly string[];
    readonly scopes: readonly string[];
    /** Delegation chain of the token to be issued, current actor first: {sub, iss, spiffe_id} (missing members = ''). */
    readonly chain: readonly { readonly sub: string; readonly iss: string; readonly spiffe_id: string }[];
    /** CEL int. */
    readonly chainDepth: number;
    /** CEL timestamp. */
    readonly now: Date;
  };
}

export type ConditionResult = { readonly ok: true; readonly value: boolean } | { readonly ok: false; readonly error: string };

/**
 * A `when:` expression that failed to parse or type-check, or that is over a limit (length, size, cost). The
 * message names the problem and its line and column.
 */
export class ConditionCompileError extends Error {
  override readonly name = 'ConditionCompileError';
}

export const CONDITION_LIMITS = Object.freeze({
  maxSourceLength: 4096,
  /**
   * Wall-clock backstop for conditions that iterate (macros) or bind, whose cost the estimate already bounds;
   * see `CostEstimator`. Wall-clock, so a heavily loaded host can hit it with an ordinary condition:
   * `limits.conditionTimeoutMs`.
   */
  timeoutMs: 100,
  maxAstNodes: 1024,
  /** Nesting of calls, selects, indexes and aggregates; also keeps the recursive checker off the stack limit. */
  maxDepth: 32,
  /**
   * Most steps a condition may cost on the worst input the limits below allow (about one cel-js AST node
   * evaluation each, 0.1 to 0.2 µs); more is a compile error. See `STEP` for what else counts.
   */
  maxCost: 100_000,
  /** Longest string a condition can read (any field, claim, attribute or list element); longer fails closed. */
  maxStringLength: 8_192,
  /** Most elements of any list, or members of any map, a condition can read; more fails closed. */
  maxListLength: 256,
  /**
   * Most values plus characters in the claims, in the attributes, and in each list field of one input
   * (audiences, scopes), counting everything nested; more fails closed. What lets a loop amortize.
   */
  maxCollectionSize: 32_768,
  /** `request.chain`: delegation.maxChainDepth is at most 32; a longer chain fails closed. */
  maxChainLength: 32,
  /** Longest `matches` pattern computed at run time; a literal pattern is compiled, and costed, at load. */
  maxPatternLength: 1_024,
  /** Longest string `duration()` parses: cel-js's parser backtracks, cubic in the length. */
  maxDurationLength: 32,
});

/** Claims are attacker-shaped JSON: bound the depth we convert (and later compare recursively). */
const MAX_JSON_DEPTH = 32;

// Fixed field lists make `subject.subjct` or `request.chainDepth == 'x'` compile errors; only attributes and
// claims are open maps, with dyn values so `attributes.groups` works both as a string and as a list.
class CelClient {
  constructor(
    readonly id: string,
    readonly authMethod: string,
    readonly spiffeId: string,
  ) {}
}

class CelIdentity {
  readonly issuer: string;
  readonly subject: string;
  readonly tokenType: string;
  readonly validator: string;
  readonly audiences: readonly string[];
  readonly expiresAt: Date;
  readonly #source: ConditionIdentity;
  #attributes: Map<string, unknown> | undefined;
  #claims: Map<string, unknown> | undefined;

  constructor(source: ConditionIdentity, role: 'subject' | 'actor') {
    this.issuer = inputString(source.issuer, `${role}.issuer`);
    this.subject = inputString(source.subject, `${role}.subject`);
    this.tokenType = inputString(source.tokenType, `${role}.tokenType`);
    this.validator = inputString(source.validator, `${role}.validator`);
    this.audiences = inputStrings(source.audiences, `${role}.audiences`);
    this.expiresAt = source.expiresAt;
    this.#source = source;
  }

  // Converted on first use: most conditions never touch claims, and the engine builds a fresh input per rule.
  get attributes(): Map<string, unknown> {
    return (this.#attributes ??= toCelMap(this.#source.attributes, 'attributes', 0, new SizeBudget('attributes')));
  }

  get claims(): Map<string, unknown> {
    return (this.#claims ??= toCelMap(this.#source.claims, 'claims', 0, new SizeBudget('claims')));
  }
}

class CelActor extends CelIdentity {
  readonly present: boolean;

  constructor(source: ConditionInput['actor']) {
    super(source, 'actor');
    this.present = source.present;
  }
}

class CelChainLink {
  constructor(
    readonly sub: string,
    readonly iss: string,
    readonly spiffe_id: string,
  ) {}
}

class CelRequest {
  readonly grantType: string;
  readonly endpoint: string;
  readonly requestedTokenType: string;
  readonly audiences: readonly string[];
  readonly scopes: readonly string[];
  readonly chain: readonly CelChainLink[];
  readonly chainDepth: bigint;
  readonly now: Date;

  constructor(source: ConditionInput['request']) {
    this.grantType = inputString(source.grantType, 'request.grantType');
    this.endpoint = inputString(source.endpoint, 'request.endpoint');
    this.requestedTokenType = inputString(source.requestedTokenType, 'request.requestedTokenType');
    this.audiences = inputStrings(source.audiences, 'request.audiences');
    this.scopes = inputStrings(source.scopes, 'request.scopes');
    if (source.chain.length > CONDITION_LIMITS.maxChainLength) {
      throw new ConditionInputError(`request.chain holds more than ${CONDITION_LIMITS.maxChainLength} members`);
    }
    this.chain = source.chain.map((link) => new CelChainLink(element(link.sub, 'request.chain'), element(link.iss, 'request.chain'), element(link.spiffe_id, 'request.chain')));
    this.chainDepth = BigInt(source.chainDepth);
    this.now = source.now;
  }
}

/** The fixed fields are bounded like claims (see `toCelValue`), so the cost estimate holds for them too. */
function inputString(value: string, path: string): string {
  if (value.length > CONDITION_LIMITS.maxStringLength) throw new ConditionInputError(`${path} is longer than ${CONDITION_LIMITS.maxStringLength} characters`);
  return value;
}

function element(value: string, path: string): string {
  if (value.length > CONDITION_LIMITS.maxStringLength) throw new ConditionInputError(`${path} holds a string longer than ${CONDITION_LIMITS.maxStringLength} characters`);
  return value;
}

function inputStrings(values: readonly string[], path: string): readonly string[] {
  if (values.length > CONDITION_LIMITS.maxListLength) throw new ConditionInputError(`${path} holds a list of more than ${CONDITION_LIMITS.maxListLength} elements`);
  const budget = new SizeBudget(path);
  budget.take(1);
  for (const value of values) budget.take(1 + element(value, path).length);
  return values;
}

const TIMESTAMP = 'google.protobuf.Timestamp'; // cel-js has no `timestamp` alias in type declarations
const DURATION = 'google.protobuf.Duration';
const IDENTITY_FIELDS = {
  issuer: 'string',
  subject: 'string',
  tokenType: 'string',
  validator: 'string',
  audiences: 'list<string>',
  expiresAt: TIMESTAMP,
  attributes: 'map<string, dyn>',
  claims: 'map<string, dyn>',
};

/**
 * cel-js's `string.matches` runs a backtracking JS RegExp (`(a+)+$` on 28 characters: 18 s), and its overload
 * can be neither replaced nor removed (registering it again "overlaps"). Before type-checking, `bindFunctions`
 * renames every `x.matches(p)` call to this overload, which runs RE2: linear in the input, RE2 syntax as CEL
 * specifies. cel-js resolves a call's overloads from its name during check() and dispatches through them at run
 * time, so the renamed call never reaches the built-in. Not a name the parser can produce: a condition cannot
 * call it directly.
 */
const RE2_MATCHES = 'matches:re2';
/** cel-js's `duration()` parses with an unanchored backtracking pattern, cubic in the string; same treatment. */
const BOUNDED_DURATION = 'duration:bounded';

/** A `matches` pattern written as a literal: compiled once, when the condition loads, and costed exactly. */
class CelRegex {
  constructor(
    readonly regex: RE2JS,
    readonly instructions: number,
  ) {}
}

// Only parses `duration(text)`: calling the built-in keeps cel-js's exact duration syntax.
const builtinDuration = new Environment().registerVariable('text', 'string').parse('duration(text)');
builtinDuration.check();

function boundedDuration(text: string): unknown {
  if (text.length > CONDITION_LIMITS.maxDurationLength) throw new EvaluationError({ code: 'invalid_duration', message: 'duration string is too long' });
  try {
    return builtinDuration({ text });
  } catch (error) {
    // The built-in's error points into its own source and quotes the input: keep only the code.
    if (error instanceof EvaluationError) throw new EvaluationError({ code: error.code, message: 'invalid duration string' });
    throw error;
  }
}

// Built once: an Environment is expensive, and its registry is shared read-only by every parsed condition.
const environment = new Environment({
  limits: {
    maxAstNodes: CONDITION_LIMITS.maxAstNodes,
    maxDepth: CONDITION_LIMITS.maxDepth,
    maxListElements: 512,
    maxMapEntries: 128,
    maxCallArguments: 8,
  },
})
  .registerType('tessera.Client', { ctor: CelClient, fields: { id: 'string', authMethod: 'string', spiffeId: 'string' } })
  .registerType('tessera.Identity', { ctor: CelIdentity, fields: IDENTITY_FIELDS })
  .registerType('tessera.Actor', { ctor: CelActor, fields: { ...IDENTITY_FIELDS, present: 'bool' } })
  .registerType('tessera.ChainLink', { ctor: CelChainLink, fields: { sub: 'string', iss: 'string', spiffe_id: 'string' } })
  .registerType('tessera.Request', {
    ctor: CelRequest,
    fields: {
      grantType: 'string',
      endpoint: 'string',
      requestedTokenType: 'string',
      audiences: 'list<string>',
      scopes: 'list<string>',
      chain: 'list<tessera.ChainLink>',
      chainDepth: 'int',
      now: TIMESTAMP,
    },
  })
  .registerType('tessera.Regex', { ctor: CelRegex })
  .registerFunction({
    name: RE2_MATCHES,
    receiverType: 'string',
    returnType: 'bool',
    params: [{ name: 'pattern', type: 'tessera.Regex' }],
    async: false,
    handler: (input: string, pattern: CelRegex) => pattern.regex.test(input),
  })
  .registerFunction({
    name: RE2_MATCHES,
    receiverType: 'string',
    returnType: 'bool',
    params: [{ name: 'pattern', type: 'string' }],
    async: false,
    handler: (input: string, pattern: string) => runtimeRegex(pattern).test(input),
  })
  .registerFunction({ name: BOUNDED_DURATION, returnType: DURATION, params: [{ name: 'text', type: 'string' }], async: false, handler: boundedDuration })
  .registerVariable('client', 'tessera.Client')
  .registerVariable('subject', 'tessera.Identity')
  .registerVariable('actor', 'tessera.Actor')
  .registerVariable('request', 'tessera.Request');

/** A parsed, type-checked `when:` expression. */
export class PolicyCondition {
  readonly source: string;
  readonly #program: ParseResult;
  readonly #needsWatchdog: boolean;
  readonly #timeoutMs: number;

  private constructor(source: string, program: ParseResult, needsWatchdog: boolean, timeoutMs: number) {
    this.source = source;
    this.#program = program;
    this.#needsWatchdog = needsWatchdog;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Parses, type-checks and costs once; throws ConditionCompileError (message says what and where, no stack),
   * also for an invalid literal `matches` pattern and for an expression over `CONDITION_LIMITS.maxCost`.
   */
  static compile(source: string, options: { readonly timeoutMs?: number } = {}): PolicyCondition {
    if (source.length > CONDITION_LIMITS.maxSourceLength) {
      throw new ConditionCompileError(`expression is ${source.length} characters; the limit is ${CONDITION_LIMITS.maxSourceLength}`);
    }
    let program: ParseResult;
    try {
      program = environment.parse(source);
    } catch (error) {
      throw compileError(source, error);
    }
    // parse() only builds the AST; check() resolves every name and overload and caches the types on the AST,
    // so evaluation no longer re-checks. This first check runs on the text as written, so its errors name
    // `matches` and `duration`, not the bounded overloads.
    const checked = program.check();
    if (!checked.valid) throw compileError(source, checked.error);
    // dyn is let through (e.g. `subject.claims.admin`): evaluate() insists on a bool at run time.
    if (checked.type !== 'bool' && checked.type !== 'dyn') {
      throw new ConditionCompileError(`expression must be a bool, but it is ${checked.type}`);
    }
    const problem = findProtoKey(program.ast);
    if (problem) throw new ConditionCompileError(`map key '__proto__' is not allowed ${where(source, problem.start)}`);

    // A fresh AST (check() has bound the first one to the built-ins), bound to the bounded overloads and
    // checked again: the same types, so this check passes where the first one did.
    const bound = environment.parse(source);
    bindFunctions(bound.ast, source);
    const rechecked = bound.check();
    if (!rechecked.valid) throw compileError(source, rechecked.error);

    const estimate = estimateCost(bound.ast);
    if (estimate.cost > CONDITION_LIMITS.maxCost) {
      const part = estimate.costliest;
      throw new ConditionCompileError(
        `expression may cost up to ${Math.ceil(estimate.cost)} steps; the limit is ${CONDITION_LIMITS.maxCost}` +
          ` (costliest part: \`${snippet(source, part.start, part.end)}\` ${where(source, part.start)})`,
      );
    }
    return new PolicyCondition(source, bound, estimate.needsWatchdog, options.timeoutMs ?? CONDITION_LIMITS.timeoutMs);
  }

  /**
   * Whether evaluation runs under the wall-clock watchdog: only conditions that iterate (macros), bind, or
   * call something the cost model does not know. A watchdog start costs a thread (60 µs or more).
   */
  get usesWatchdog(): boolean {
    return this.#needsWatchdog;
  }

  /**
   * Never throws. Runtime errors (missing map key, overflow, input over a limit, timeout) come back as {ok:false}.
   * `timeoutMs` overrides the condition's bound for this one evaluation.
   */
  evaluate(input: ConditionInput, options: { readonly timeoutMs?: number } = {}): ConditionResult {
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    try {
      const context = {
        client: new CelClient(
          inputString(input.client.id, 'client.id'),
          inputString(input.client.authMethod, 'client.authMethod'),
          inputString(input.client.spiffeId, 'client.spiffeId'),
        ),
        subject: new CelIdentity(input.subject, 'subject'),
        actor: new CelActor(input.actor),
        request: new CelRequest(input.request),
      };
      const program = this.#program;
      const value: unknown = this.#needsWatchdog ? underWatchdog(() => program(context), timeoutMs) : program(context);
      if (typeof value !== 'boolean') return { ok: false, error: 'expression did not evaluate to a bool' };
      return { ok: true, value };
    } catch (error) {
      return { ok: false, error: this.#describe(error, timeoutMs) };
    }
  }

  /** Names the failing part of the policy text, never input values: this goes to audit records and logs. */
  #describe(error: unknown, timeoutMs: number): string {
    if (isTimeout(error)) return `evaluation timeout: exceeded ${timeoutMs} ms`;
    if (error instanceof ConditionInputError) return error.message;
    // cel-js summaries can quote data (`No such key: <claim value>`, `Invalid duration string: ...`): use the code.
    if (error instanceof EvaluationError) {
      const what = error.code.replaceAll('_', ' ');
      const range = error.range;
      if (!range) return what;
      return `${what} at \`${snippet(this.source, range.start, range.end)}\` ${where(this.source, range.start)}`;
    }
    if (errorName(error) === 'RangeError') return 'evaluation exceeded a runtime limit';
    return 'evaluation failed';
  }
}

/** A claim, attribute or field value the broker cannot expose to CEL (non-JSON, too deep, over a size limit). */
class ConditionInputError extends Error {}

/**
 * Counts values plus characters in one claims or attributes tree (or list field) against
 * `maxCollectionSize`: the per-string and per-list limits alone allow 256 × 8192 characters per list.
 */
class SizeBudget {
  #remaining: number = CONDITION_LIMITS.maxCollectionSize;

  constructor(readonly path: string) {}

  take(units: number): void {
    this.#remaining -= units;
    if (this.#remaining < 0) throw new ConditionInputError(`${this.path} holds more than ${CONDITION_LIMITS.maxCollectionSize} values and characters`);
  }
}

/** JSON → CEL value. Objects become Maps: see `toCelMap`. Every limit the cost estimate assumes is enforced here. */
function toCelValue(value: unknown, path: string, depth: number, budget: SizeBudget): unknown {
  switch (typeof value) {
    case 'string':
      if (value.length > CONDITION_LIMITS.maxStringLength) {
        throw new ConditionInputError(`${path} holds a string longer than ${CONDITION_LIMITS.maxStringLength} characters`);
      }
      budget.take(1 + value.length);
      return value;
    case 'boolean':
      budget.take(1);
      return value;
    case 'number':
      if (Number.isFinite(value)) {
        budget.take(1);
        return value;
      }
      break;
    case 'object': {
      if (value === null) {
        budget.take(1);
        return null;
      }
      if (depth >= MAX_JSON_DEPTH) throw new ConditionInputError(`${path} is nested more than ${MAX_JSON_DEPTH} levels deep`);
      if (Array.isArray(value)) {
        if (value.length > CONDITION_LIMITS.maxListLength) {
          throw new ConditionInputError(`${path} holds a list of more than ${CONDITION_LIMITS.maxListLength} elements`);
        }
        budget.take(1);
        const list: unknown[] = [];
        for (const item of value) list.push(item === undefined ? null : toCelValue(item, path, depth + 1, budget));
        return list;
      }
      const prototype: unknown = Object.getPrototypeOf(value);
      if (prototype === Object.prototype || prototype === null) return toCelMap(value as Record<string, unknown>, path, depth + 1, budget);
      break;
    }
  }
  throw new ConditionInputError(`${path} holds a value that is not JSON`);
}

/**
 * A Map, never the plain object: cel-js finds a value's CEL type through `value.constructor`, so a claim
 * named `constructor` would make every lookup in that object fail. Object.keys() sees a JSON-parsed
 * `__proto__` as the own data key it is, and a Map keeps it as data.
 */
function toCelMap(record: Readonly<Record<string, unknown>>, path: string, depth: number, budget: SizeBudget): Map<string, unknown> {
  const keys = Object.keys(record);
  if (keys.length > CONDITION_LIMITS.maxListLength) {
    throw new ConditionInputError(`${path} holds an object with more than ${CONDITION_LIMITS.maxListLength} members`);
  }
  budget.take(1);
  const map = new Map<string, unknown>();
  for (const key of keys) {
    const value = record[key];
    if (value === undefined) continue;
    if (key.length > CONDITION_LIMITS.maxStringLength) {
      throw new ConditionInputError(`${path} holds a string longer than ${CONDITION_LIMITS.maxStringLength} characters`);
    }
    budget.take(key.length);
    map.set(key, toCelValue(value, path, depth, budget));
  }
  return map;
}

/**
 * Points `x.matches(p)` at RE2 and `duration(s)` at the bounded parser (see RE2_MATCHES). A literal pattern is
 * compiled here, once: an invalid one is a compile error, like a syntax error.
 */
function bindFunctions(node: ASTNode, source: string): void {
  if (node.op === 'rcall' && node.args[0] === 'matches' && node.args[2].length === 1) {
    node.args[0] = RE2_MATCHES;
    const pattern = node.args[2][0]!;
    if (pattern.op === 'value' && typeof pattern.args === 'string') (pattern as { args: unknown }).args = literalRegex(pattern.args, source, pattern.start);
  } else if (node.op === 'call' && node.args[0] === 'duration' && node.args[1].length === 1) {
    node.args[0] = BOUNDED_DURATION;
  }
  for (const child of children(node)) bindFunctions(child, source);
}

function literalRegex(pattern: string, source: string, offset: number): CelRegex {
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

function maxRuntimeProgram(patternLength: number): number {
  return 2 * patternLength + 2;
}

function runtimeRegex(pattern: string): RE2JS {
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

/**
 * What things cost, in steps (the unit of `CONDITION_LIMITS.maxCost`): one step is one cel-js AST node
 * evaluation, 0.1 to 0.2 µs on a warm server. Measured worst cases on Node 24, rounded up.
 */
const STEP = {
  /** Native string work (search, prefix, copy, case change), per UTF-16 unit: about 0.3 to 1.5 ns. */
  char: 1 / 32,
  /** Comparing strings (`==`, `<`, `in`), per UTF-16 unit: about 0.1 ns. */
  compare: 1 / 256,
  /** `size(string)` counts code points in a JS loop: about 20 ns per unit. */
  codePoint: 1 / 4,
  /** Native work per list or map element (`in`, `==`, `+`, split, join): about 20 ns. */
  element: 1 / 8,
  /** RE2 (re2js) per input character: up to 130 ns for a small program, the engine's own overhead. */
  re2Char: 1 / 2,
  /** RE2 per program instruction per input character: 6 to 18 ns. */
  re2: 1 / 16,
  /** Compiling a pattern computed at run time, per pattern character: up to 10 µs. */
  compile: 64,
  /** A comprehension's bookkeeping per iteration: the step and accumulator nodes. */
  iteration: 4,
  /** A timestamp getter given a time zone: Intl formatting plus a Date parse, about 120 µs. */
  timeZone: 1024,
  /** `duration()`: cubic backtracking in cel-js, per character³; 32 digits take about 120 µs. */
  durationCube: 1 / 32,
} as const;

/**
 * The worst a value can be, for the estimate. `size` counts values plus characters in all of it (a string of
 * n characters is 1 + n). Each measure is an upper bound that the input conversion enforces.
 */
interface Shape {
  /** Longest it can be as a string (or bytes); 0: never one. */
  readonly chars: number;
  /** Most elements (list) or members (map) it can have; 0: never one. */
  readonly items: number;
  /** Each element; for a map each key or value (a comprehension ranges over the keys). */
  readonly item?: Shape;
  readonly size: number;
  /** Fields of a tessera object. */
  readonly fields?: Readonly<Record<string, Shape>>;
  /**
   * Set on a comprehension variable and on what is read out of it: every measure above is then also at most
   * that variable's `size` in the iteration at hand, and those add up to at most the range's `size`. This is
   * how `groups.exists(g, g.matches(p))` costs the characters of all groups once, not 256 × 8192.
   */
  readonly within?: number;
  /** With `within`: the measures are at most `scale` × that size (a case change can triple a string). */
  readonly scale?: number;
}

const SCALAR: Shape = { chars: 0, items: 0, size: 1 };
const stringShape = (chars: number): Shape => ({ chars, items: 0, size: 1 + chars });
const objectShape = (fields: Record<string, Shape>): Shape => ({ chars: 0, items: 0, size: 1 + Object.values(fields).reduce((sum, field) => sum + field.size, 0), fields });

const INPUT_STRING = stringShape(CONDITION_LIMITS.maxStringLength);
const INPUT_LIST: Shape = { chars: 0, items: CONDITION_LIMITS.maxListLength, item: INPUT_STRING, size: CONDITION_LIMITS.maxCollectionSize };
/** Any claim value: a string, a list or an object, nested, all within the claims' `maxCollectionSize`. */
const JSON_VALUE: Shape = (() => {
  const value = { chars: CONDITION_LIMITS.maxStringLength, items: CONDITION_LIMITS.maxListLength, size: CONDITION_LIMITS.maxCollectionSize } as { -readonly [K in keyof Shape]: Shape[K] };
  value.item = value;
  return value;
})();
const JSON_MAP: Shape = { chars: 0, items: CONDITION_LIMITS.maxListLength, item: JSON_VALUE, size: CONDITION_LIMITS.maxCollectionSize };
const ATTRIBUTE_VALUE: Shape = { ...INPUT_LIST, chars: CONDITION_LIMITS.maxStringLength };
const ATTRIBUTES: Shape = { chars: 0, items: CONDITION_LIMITS.maxListLength, item: ATTRIBUTE_VALUE, size: CONDITION_LIMITS.maxCollectionSize };
const IDENTITY_SHAPE = {
  issuer: INPUT_STRING,
  subject: INPUT_STRING,
  tokenType: INPUT_STRING,
  validator: INPUT_STRING,
  audiences: INPUT_LIST,
  expiresAt: SCALAR,
  attributes: ATTRIBUTES,
  claims: JSON_MAP,
};
const CHAIN_LINK = objectShape({ sub: INPUT_STRING, iss: INPUT_STRING, spiffe_id: INPUT_STRING });
const VARIABLES: ReadonlyMap<string, Shape> = new Map([
  ['client', objectShape({ id: INPUT_STRING, authMethod: INPUT_STRING, spiffeId: INPUT_STRING })],
  ['subject', objectShape(IDENTITY_SHAPE)],
  ['actor', objectShape({ ...IDENTITY_SHAPE, present: SCALAR })],
  [
    'request',
    objectShape({
      grantType: INPUT_STRING,
      endpoint: INPUT_STRING,
      requestedTokenType: INPUT_STRING,
      audiences: INPUT_LIST,
      scopes: INPUT_LIST,
      chain: { chars: 0, items: CONDITION_LIMITS.maxChainLength, item: CHAIN_LINK, size: 1 + CONDITION_LIMITS.maxChainLength * CHAIN_LINK.size },
      chainDepth: SCALAR,
      now: SCALAR,
    }),
  ],
]);

function detach(shape: Shape): Shape {
  if (shape.within === undefined) return shape;
  const { within: _, scale: __, ...rest } = shape;
  return rest;
}

/** `shape`, still within whatever `source` is within. */
function inherit(shape: Shape, source: Shape, scale = 1): Shape {
  return source.within === undefined ? shape : { ...shape, within: source.within, scale: scale * (source.scale ?? 1) };
}

/** A field, index or element of `shape`; read out of a comprehension variable, it stays within it. */
function member(shape: Shape, field?: string): Shape {
  return inherit((field !== undefined ? shape.fields?.[field] : undefined) ?? shape.item ?? JSON_VALUE, shape);
}

function union(a: Shape, b: Shape): Shape {
  if (a === b) return a;
  const item = a.item && b.item ? union(a.item, b.item) : (a.item ?? b.item);
  let fields: Record<string, Shape> | undefined;
  if (a.fields || b.fields) {
    fields = { ...b.fields };
    for (const [name, shape] of Object.entries(a.fields ?? {})) fields[name] = b.fields?.[name] ? union(shape, b.fields[name]) : shape;
  }
  return {
    chars: Math.max(a.chars, b.chars),
    items: Math.max(a.items, b.items),
    size: Math.max(a.size, b.size),
    ...(item ? { item } : {}),
    ...(fields ? { fields } : {}),
    ...(a.within !== undefined && a.within === b.within ? { within: a.within, scale: Math.max(a.scale ?? 1, b.scale ?? 1) } : {}),
  };
}

/** For one open comprehension: a bound per unit of its variable's size, and a bound per iteration. */
interface Term {
  readonly perUnit: number;
  readonly perIteration: number;
}

const NO_TERMS: ReadonlyMap<number, Term> = new Map();

/**
 * An upper bound in steps: `fixed`, plus for each comprehension still open a term that holds in every one of
 * its iterations, both as a multiple of that iteration's variable size and as a plain number. Closing the
 * comprehension (`loop`) takes the smaller of: per unit × the range's size (the sizes of all its elements
 * add up to at most that), and per iteration × the number of elements.
 */
class Cost {
  static readonly ZERO = new Cost(0);
  static readonly ONE = new Cost(1);

  constructor(
    readonly fixed: number,
    readonly terms: ReadonlyMap<number, Term> = NO_TERMS,
  ) {}

  /** `perUnit` × `measure` of `shape`; `measure` is at most `scale` × the size of the variable it is within, if any. */
  static of(perUnit: number, measure: number, shape: Shape): Cost {
    if (perUnit === 0 || measure === 0) return Cost.ZERO;
    if (shape.within === undefined) return new Cost(perUnit * measure);
    return new Cost(0, new Map([[shape.within, { perUnit: perUnit * (shape.scale ?? 1), perIteration: perUnit * measure }]]));
  }

  plus(other: Cost): Cost {
    if (other.terms.size === 0) return other.fixed === 0 ? this : new Cost(this.fixed + other.fixed, this.terms);
    const terms = new Map(this.terms);
    for (const [loop, term] of other.terms) {
      const mine = terms.get(loop);
      terms.set(loop, mine ? { perUnit: mine.perUnit + term.perUnit, perIteration: mine.perIteration + term.perIteration } : term);
    }
    return new Cost(this.fixed + other.fixed, terms);
  }

  /** Either branch of a ternary: a bound on both. */
  or(other: Cost): Cost {
    const terms = new Map(this.terms);
    for (const [loop, term] of other.terms) {
      const mine = terms.get(loop);
      terms.set(loop, mine ? { perUnit: Math.max(mine.perUnit, term.perUnit), perIteration: Math.max(mine.perIteration, term.perIteration) } : term);
    }
    return new Cost(Math.max(this.fixed, other.fixed), terms);
  }

  /** This, as the cost of one iteration, over every iteration of comprehension `loop`. */
  loop(loop: number, iterations: number, rangeSize: number): Cost {
    const terms = new Map<number, Term>();
    for (const [other, term] of this.terms) {
      if (other !== loop) terms.set(other, { perUnit: term.perUnit * iterations, perIteration: term.perIteration * iterations });
    }
    const own = this.terms.get(loop);
    return new Cost(this.fixed * iterations + (own ? Math.min(own.perUnit * rangeSize, own.perIteration * iterations) : 0), terms);
  }

  /** With every open term at its per-iteration bound. */
  get bound(): number {
    let total = this.fixed;
    for (const term of this.terms.values()) total += term.perIteration;
    return total;
  }
}

interface Estimate {
  readonly cost: Cost;
  readonly shape: Shape;
}

type Scope = ReadonlyMap<string, Shape>;

const QUANTIFIERS = new Set(['all', 'exists', 'exists_one']);
const TIMESTAMP_GETTERS = new Set([
  'getDate', 'getDayOfMonth', 'getDayOfWeek', 'getDayOfYear', 'getFullYear', 'getHours', 'getMilliseconds',
  'getMinutes', 'getMonth', 'getSeconds',
]);

/**
 * A static worst-case cost, like cel-go's estimator: every node costs a step; a comprehension costs its range
 * plus, per element, its body; string functions, `in`, `==` and RE2 cost in proportion to the sizes they touch.
 * Sizes come from `Shape`s, which the input limits make true. Anything without a model (a macro or function a
 * later cel-js adds) is costed as one step and marks the condition `unmodelled`, which keeps the watchdog on.
 */
class CostEstimator {
  iterates = false;
  unmodelled = false;
  readonly costs = new Map<ASTNode, number>();
  #loops = 0;

  estimate(node: ASTNode, scope: Scope): Estimate {
    const result = this.#estimate(node, scope);
    this.costs.set(node, result.cost.bound);
    return result;
  }

  #estimate(node: ASTNode, scope: Scope): Estimate {
    switch (node.op) {
      case 'value':
        return { cost: Cost.ONE, shape: literalShape(node.args) };
      case 'id':
        return { cost: Cost.ONE, shape: scope.get(node.args) ?? VARIABLES.get(node.args) ?? JSON_VALUE };
      case '.':
      case '.?': {
        const object = this.estimate(node.args[0], scope);
        return { cost: Cost.ONE.plus(object.cost), shape: member(object.shape, node.args[1]) };
      }
      case '[]':
      case '[?]': {
        const [object, index] = [this.estimate(node.args[0], scope), this.estimate(node.args[1], scope)];
        return { cost: Cost.ONE.plus(object.cost).plus(index.cost), shape: member(object.shape) };
      }
      case 'list': {
        const elements = node.args.map((element) => this.estimate(element, scope));
        return {
          cost: elements.reduce((sum, element) => sum.plus(element.cost), new Cost(1 + elements.length * STEP.element)),
          shape: {
            chars: 0,
            items: elements.length,
            size: elements.reduce((sum, element) => sum + element.shape.size, 1),
            ...(elements.length > 0 ? { item: elements.map((element) => detach(element.shape)).reduce(union) } : {}),
          },
        };
      }
      case 'map': {
        const entries = node.args.flat().map((part) => this.estimate(part, scope));
        return {
          cost: entries.reduce((sum, part) => sum.plus(part.cost), new Cost(1 + node.args.length * STEP.element)),
          shape: {
            chars: 0,
            items: node.args.length,
            size: entries.reduce((sum, part) => sum + part.shape.size, 1),
            ...(entries.length > 0 ? { item: entries.map((part) => detach(part.shape)).reduce(union) } : {}),
          },
        };
      }
      case '?:': {
        const [condition, then, otherwise] = node.args.map((part) => this.estimate(part, scope)) as [Estimate, Estimate, Estimate];
        return { cost: Cost.ONE.plus(condition.cost).plus(then.cost.or(otherwise.cost)), shape: union(then.shape, otherwise.shape) };
      }
      case '||':
      case '&&':
      case '-':
      case '*':
      case '/':
      case '%': {
        const [left, right] = [this.estimate(node.args[0], scope), this.estimate(node.args[1], scope)];
        return { cost: Cost.ONE.plus(left.cost).plus(right.cost), shape: SCALAR };
      }
      case '!_':
      case '-_':
        return { cost: Cost.ONE.plus(this.estimate(node.args, scope).cost), shape: SCALAR };
      case '==':
      case '!=':
      case '<':
      case '<=':
      case '>':
      case '>=':
      case 'in':
      case '+':
        return this.#binary(node.op, node.args[0], node.args[1], scope);
      case 'call':
        return this.#call(node.args[0], undefined, node.args[1], scope);
      case 'rcall':
        return this.#call(node.args[0], node.args[1], node.args[2], scope);
    }
    // An operator a later cel-js adds.
    this.unmodelled = true;
    return { cost: children(node).reduce((sum, child) => sum.plus(this.estimate(child, scope).cost), Cost.ONE), shape: JSON_VALUE };
  }

  #binary(op: string, leftNode: ASTNode, rightNode: ASTNode, scope: Scope): Estimate {
    const [left, right] = [this.estimate(leftNode, scope), this.estimate(rightNode, scope)];
    const cost = Cost.ONE.plus(left.cost).plus(right.cost);
    const l = left.shape;
    const r = right.shape;
    switch (op) {
      case 'in': {
        // Each element compared once: the comparisons touch at most everything in the list.
        let compare = Cost.of(STEP.element, r.items, r);
        const literal = literalLength(leftNode);
        if (l.chars > 0) compare = compare.plus(literal !== undefined ? Cost.of(STEP.compare * literal, r.items, r) : Cost.of(STEP.compare, r.size, r));
        if (l.items > 0) compare = compare.plus(Cost.of(STEP.element, r.size, r));
        return { cost: cost.plus(compare), shape: SCALAR };
      }
      case '+':
        return {
          cost: cost.plus(Cost.of(STEP.char, l.chars, l)).plus(Cost.of(STEP.char, r.chars, r)).plus(Cost.of(STEP.element, l.items, l)).plus(Cost.of(STEP.element, r.items, r)),
          shape: {
            chars: l.chars + r.chars,
            items: l.items + r.items,
            size: l.size + r.size,
            ...(l.item || r.item ? { item: union(detach(l.item ?? r.item!), detach(r.item ?? l.item!)) } : {}),
          },
        };
      case '==':
      case '!=': {
        // Strings compare up to the shorter; lists and maps element by element, up to the smaller.
        let compare = smaller(STEP.compare, left, right, leftNode, rightNode, 'chars');
        if (l.items > 0 && r.items > 0) compare = compare.plus(smaller(STEP.element, left, right, leftNode, rightNode, 'size'));
        return { cost: cost.plus(compare), shape: SCALAR };
      }
      default:
        return { cost: cost.plus(smaller(STEP.compare, left, right, leftNode, rightNode, 'chars')), shape: SCALAR };
    }
  }

  #call(name: string, receiverNode: ASTNode | undefined, argNodes: readonly ASTNode[], scope: Scope): Estimate {
    if (receiverNode && argNodes[0]?.op === 'id') {
      if ((QUANTIFIERS.has(name) || name === 'filter') && argNodes.length === 2) return this.#comprehension(name, receiverNode, argNodes, scope);
      if (name === 'map' && (argNodes.length === 2 || argNodes.length === 3)) return this.#comprehension(name, receiverNode, argNodes, scope);
      if (name === 'bind' && argNodes.length === 3) {
        this.iterates = true; // not a loop, but values can double per bind: keep the watchdog, as before
        const value = this.estimate(argNodes[1]!, scope);
        const body = this.estimate(argNodes[2]!, new Map(scope).set(argNodes[0].args, value.shape));
        return { cost: Cost.ONE.plus(value.cost).plus(body.cost), shape: body.shape };
      }
    }
    const receiver = receiverNode ? this.estimate(receiverNode, scope) : undefined;
    const args = argNodes.map((arg) => this.estimate(arg, scope));
    const cost = args.reduce((sum, arg) => sum.plus(arg.cost), Cost.ONE.plus(receiver?.cost ?? Cost.ZERO));
    const own = callCost(name, receiver, args, argNodes);
    if (!own) {
      this.unmodelled = true;
      return { cost, shape: JSON_VALUE };
    }
    return { cost: cost.plus(own.cost), shape: own.shape };
  }

  #comprehension(name: string, receiverNode: ASTNode, argNodes: readonly ASTNode[], scope: Scope): Estimate {
    this.iterates = true;
    const range = this.estimate(receiverNode, scope);
    const loop = this.#loops++;
    const variable: Shape = { ...detach(member(range.shape)), within: loop };
    const inner = new Map(scope).set((argNodes[0] as Extract<ASTNode, { op: 'id' }>).args, variable);
    const parts = argNodes.slice(1).map((arg) => this.estimate(arg, inner));
    const body = parts.reduce((sum, part) => sum.plus(part.cost), new Cost(STEP.iteration));
    const cost = Cost.ONE.plus(range.cost).plus(body.loop(loop, range.shape.items, range.shape.size));
    if (name === 'filter') return { cost, shape: detach(range.shape) };
    if (name === 'map') {
      const element = detach(parts.at(-1)!.shape);
      return { cost, shape: { chars: 0, items: range.shape.items, item: element, size: 1 + range.shape.items * element.size } };
    }
    return { cost, shape: SCALAR };
  }
}

/** Cost of the function itself (its receiver and arguments are counted already); undefined: no model. */
function callCost(name: string, receiver: Estimate | undefined, args: readonly Estimate[], argNodes: readonly ASTNode[]): Estimate | undefined {
  const target = receiver ?? args[0];
  const t = target?.shape ?? SCALAR;
  const first = args[0]?.shape ?? SCALAR;
  switch (name) {
    case 'has':
    case 'type':
    case 'timestamp': // cel-js refuses strings outside 20 to 30 characters before parsing
    case 'at':
      return { cost: Cost.ZERO, shape: SCALAR };
    case 'dyn':
      return { cost: Cost.ZERO, shape: first };
    case 'size':
      return { cost: Cost.of(STEP.codePoint, t.chars, t), shape: SCALAR };
    case 'int':
    case 'uint':
    case 'double':
    case 'bool':
      return { cost: Cost.of(STEP.char, first.chars, first), shape: SCALAR };
    case 'string':
      return { cost: Cost.of(STEP.char, t.chars, t), shape: stringShape(Math.max(t.chars, 32)) };
    case 'bytes':
      return { cost: Cost.of(STEP.char, first.chars, first), shape: stringShape(3 * first.chars) };
    case 'hex':
      return { cost: Cost.of(STEP.char, t.chars, t), shape: stringShape(2 * t.chars) };
    case 'base64':
      return { cost: Cost.of(STEP.char, t.chars, t), shape: stringShape(4 * Math.ceil(t.chars / 3)) };
    case 'startsWith':
    case 'endsWith':
      return receiver && args[0] ? { cost: smaller(STEP.char, receiver, args[0], undefined, argNodes[0], 'chars'), shape: SCALAR } : undefined;
    case 'contains':
    case 'indexOf':
      return { cost: Cost.of(STEP.char, t.chars, t).plus(Cost.of(STEP.char, first.chars, first)), shape: SCALAR };
    case 'lastIndexOf': {
      // V8's lastIndexOf compares at every position: characters × pattern length.
      const pattern = Math.max(1, first.chars);
      const cost = first.within === undefined ? Cost.of(STEP.char * pattern, t.chars, t) : Cost.of(STEP.char * Math.max(1, t.chars), first.chars, first);
      return { cost, shape: SCALAR };
    }
    case 'lowerAscii':
    case 'upperAscii':
      // Full Unicode case mapping: 'ß' upper-cases to 'SS', 'ΐ' to three units.
      return { cost: Cost.of(STEP.char, t.chars, t), shape: inherit(stringShape(3 * t.chars), t, 3) };
    case 'trim':
    case 'substring':
      return { cost: Cost.of(STEP.char, t.chars, t), shape: inherit(stringShape(t.chars), t) };
    case 'split': {
      const limit = argNodes[1]?.op === 'value' && typeof argNodes[1].args === 'bigint' && argNodes[1].args > 0n ? Number(argNodes[1].args) : Infinity;
      const items = Math.min(t.chars + 1, limit);
      return {
        cost: Cost.of(STEP.char + STEP.element, t.chars, t).plus(new Cost(STEP.element)),
        shape: { chars: 0, items, item: stringShape(t.chars), size: 1 + items + t.chars },
      };
    }
    case 'join': {
      const elements = Math.min(t.items * (t.item?.chars ?? 0), t.size);
      const chars = elements + Math.max(0, t.items - 1) * first.chars;
      return { cost: Cost.of(STEP.element, t.items, t).plus(new Cost(STEP.char * chars)), shape: stringShape(chars) };
    }
    case RE2_MATCHES: {
      const literal = argNodes[0]?.op === 'value' && argNodes[0].args instanceof CelRegex ? argNodes[0].args : undefined;
      if (literal) return { cost: Cost.of(STEP.re2Char + STEP.re2 * literal.instructions, t.chars, t), shape: SCALAR };
      // Worst case: every evaluation compiles (cache miss) the longest pattern the limits allow.
      const length = Math.min(first.chars, CONDITION_LIMITS.maxPatternLength);
      const instructions = maxRuntimeProgram(length);
      const compile = Cost.of(STEP.compile + STEP.char, length, first);
      const perChar = STEP.re2Char + STEP.re2 * instructions;
      const match = t.within !== undefined && first.within === undefined ? Cost.of(perChar, t.chars, t) : new Cost(perChar * t.chars);
      return { cost: compile.plus(match), shape: SCALAR };
    }
    case BOUNDED_DURATION: {
      const length = Math.min(first.chars, CONDITION_LIMITS.maxDurationLength);
      return { cost: new Cost(STEP.durationCube * length ** 3), shape: SCALAR };
    }
    default:
      if (TIMESTAMP_GETTERS.has(name) && receiver) {
        return { cost: args[0] ? new Cost(STEP.timeZone).plus(Cost.of(STEP.char, first.chars, first)) : Cost.ZERO, shape: SCALAR };
      }
      return undefined;
  }
}

/**
 * `perUnit` × the smaller `measure` of two operands. Any one operand bounds it: a literal's own size is exact;
 * failing that, one read out of a comprehension variable lets the loop amortize it.
 */
function smaller(perUnit: number, a: Estimate, b: Estimate, aNode: ASTNode | undefined, bNode: ASTNode | undefined, measure: 'chars' | 'size'): Cost {
  const literal = Math.min(literalMeasure(aNode, measure) ?? Infinity, literalMeasure(bNode, measure) ?? Infinity);
  if (literal !== Infinity) return new Cost(perUnit * literal);
  const least = Math.min(a.shape[measure], b.shape[measure]);
  if (least * perUnit <= 1) return new Cost(perUnit * least);
  if (a.shape.within !== undefined) return Cost.of(perUnit, a.shape[measure], a.shape);
  if (b.shape.within !== undefined) return Cost.of(perUnit, b.shape[measure], b.shape);
  return new Cost(perUnit * least);
}

function literalMeasure(node: ASTNode | undefined, measure: 'chars' | 'size'): number | undefined {
  if (!node || node.op !== 'value') return undefined;
  const shape = literalShape(node.args);
  return shape[measure];
}

function literalLength(node: ASTNode): number | undefined {
  return node.op === 'value' && typeof node.args === 'string' ? node.args.length : undefined;
}

function literalShape(value: unknown): Shape {
  if (typeof value === 'string') return stringShape(value.length);
  if (value instanceof Uint8Array) return stringShape(value.length);
  return SCALAR;
}

interface CostReport {
  /** Worst case, in steps. */
  readonly cost: number;
  /** The node most of the cost is in. */
  readonly costliest: ASTNode;
  readonly needsWatchdog: boolean;
}

function estimateCost(ast: ASTNode): CostReport {
  const estimator = new CostEstimator();
  const cost = estimator.estimate(ast, new Map()).cost.bound;
  // Walk down while one child holds most of the cost: a comprehension stops it, its body being per element.
  let costliest = ast;
  for (;;) {
    const total = estimator.costs.get(costliest) ?? 0;
    const next = children(costliest).reduce<ASTNode | undefined>((best, child) => ((estimator.costs.get(child) ?? 0) > (best ? (estimator.costs.get(best) ?? 0) : 0) ? child : best), undefined);
    if (!next || (estimator.costs.get(next) ?? 0) < total / 2) break;
    costliest = next;
  }
  return { cost, costliest, needsWatchdog: estimator.iterates || estimator.unmodelled };
}

/**
 * cel-js builds map literals by assignment, so a literal `'__proto__'` key sets the prototype instead of
 * adding an entry. Not exploitable (reads check own keys), but silently wrong, so refuse it up front.
 */
function findProtoKey(node: ASTNode): ASTNode | undefined {
  if (node.op === 'map') {
    const entry = node.args.find(([key]) => key.op === 'value' && key.args === '__proto__');
    if (entry) return entry[0];
  }
  for (const child of children(node)) {
    const found = findProtoKey(child);
    if (found) return found;
  }
  return undefined;
}

function children(node: ASTNode): readonly ASTNode[] {
  switch (node.op) {
    case 'value':
    case 'id':
      return [];
    case 'call':
      return node.args[1];
    case 'rcall':
      return [node.args[1], ...node.args[2]];
    case '.':
    case '.?':
      return [node.args[0]];
    case '!_':
    case '-_':
      return [node.args];
    case 'map':
      return node.args.flat();
    default:
      return Array.isArray(node.args) ? node.args : [];
  }
}

/**
 * Runs `evaluate` so that a wall-clock timeout terminates it. vm's timeout arms a watchdog thread that calls
 * V8's TerminateExecution, which stops whatever JS runs on this isolate, including cel-js code from the main
 * context and a backtracking regex, not only code compiled inside the vm context. The context is only a
 * vehicle: the script's sole statement calls back out. Costs a thread start per call (60 µs or more), hence only
 * for conditions that iterate or bind (see `estimateCost`): a backstop, their cost being bounded already.
 */
function underWatchdog(evaluate: () => unknown, timeoutMs: number): unknown {
  watchdog ??= createWatchdog();
  watchdog.pending = evaluate;
  try {
    return watchdog.script.runInContext(watchdog.context, { timeout: timeoutMs });
  } finally {
    watchdog.pending = undefined;
  }
}

interface Watchdog {
  readonly context: vm.Context;
  readonly script: vm.Script;
  pending: (() => unknown) | undefined;
}

let watchdog: Watchdog | undefined;

function createWatchdog(): Watchdog {
  const state: Watchdog = { context: vm.createContext(Object.create(null)), script: new vm.Script('run()', { filename: 'tessera:policy-condition' }), pending: undefined };
  state.context.run = () => state.pending?.();
  return state;
}

// Duck-typed: Node builds this error from its own Error, not necessarily the caller's (vitest is one example).
function isTimeout(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === 'ERR_SCRIPT_EXECUTION_TIMEOUT';
}

function errorName(error: unknown): unknown {
  return typeof error === 'object' && error !== null ? (error as { name?: unknown }).name : undefined;
}

function compileError(source: string, error: unknown): ConditionCompileError {
  if (error instanceof ParseError || error instanceof CelTypeError || error instanceof EvaluationError) {
    const range = error.range;
    return new ConditionCompileError(range ? `${error.summary} ${where(source, range.start)}` : error.summary);
  }
  if (errorName(error) === 'RangeError') return new ConditionCompileError('expression is nested too deeply');
  throw error;
}

function where(source: string, offset: number): string {
  const before = source.slice(0, offset);
  const line = before.split('\n').length;
  const column = offset - before.lastIndexOf('\n');
  return `(line ${line}, column ${column})`;
}

function snippet(source: string, start: number, end: number): string {
  const text = source.slice(start, Math.max(end, start + 1)).replace(/\s+/g, ' ');
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
