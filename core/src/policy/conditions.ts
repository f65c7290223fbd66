import { Environment, EvaluationError, ParseError, TypeError as CelTypeError, type ASTNode, type ParseResult } from '@marcbachmann/cel-js';
import { children } from './cel-ast.js';
import { ConditionCompileError, where } from './condition-compile-error.js';
import { estimateCost } from './condition-cost.js';
import { BOUNDED_DURATION, boundedDuration } from './condition-duration.js';
import { CelActor, CelChainLink, CelClient, CelIdentity, CelRequest, ConditionInputError, inputString, type ConditionInput } from './condition-input.js';
import { CONDITION_LIMITS } from './condition-limits.js';
import { CelRegex, RE2_MATCHES, literalRegex, runtimeRegex } from './condition-regex.js';
import { isTimeout, underWatchdog } from './condition-watchdog.js';

export { CONDITION_LIMITS, ConditionCompileError };
export type { ConditionIdentity, ConditionInput } from './condition-input.js';

export type ConditionResult = { readonly ok: true; readonly value: boolean } | { readonly ok: false; readonly error: string };

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

function snippet(source: string, start: number, end: number): string {
  const text = source.slice(start, Math.max(end, start + 1)).replace(/\s+/g, ' ');
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
