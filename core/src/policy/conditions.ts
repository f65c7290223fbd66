import vm from 'node:vm';
import { Environment, EvaluationError, ParseError, TypeError as CelTypeError, type ASTNode, type ParseResult } from '@marcbachmann/cel-js';

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

/** A `when:` expression that failed to parse or type-check. The message names the problem and its line and column. */
export class ConditionCompileError extends Error {
  override readonly name = 'ConditionCompileError';
}

export const CONDITION_LIMITS = Object.freeze({
  maxSourceLength: 4096,
  /**
   * Default wall-clock bound for conditions that iterate (macros), bind or run a regex; see `needsWatchdog`.
   * Wall-clock, so a heavily loaded host can hit it with an ordinary condition: `limits.conditionTimeoutMs`.
   */
  timeoutMs: 100,
  maxAstNodes: 1024,
  /** Nesting of calls, selects, indexes and aggregates; also keeps the recursive checker off the stack limit. */
  maxDepth: 32,
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

  constructor(source: ConditionIdentity) {
    this.issuer = source.issuer;
    this.subject = source.subject;
    this.tokenType = source.tokenType;
    this.validator = source.validator;
    this.audiences = source.audiences;
    this.expiresAt = source.expiresAt;
    this.#source = source;
  }

  // Converted on first use: most conditions never touch claims, and the engine builds a fresh input per rule.
  get attributes(): Map<string, unknown> {
    return (this.#attributes ??= toCelMap(this.#source.attributes, 'attributes', 0));
  }

  get claims(): Map<string, unknown> {
    return (this.#claims ??= toCelMap(this.#source.claims, 'claims', 0));
  }
}

class CelActor extends CelIdentity {
  readonly present: boolean;

  constructor(source: ConditionInput['actor']) {
    super(source);
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
    this.grantType = source.grantType;
    this.endpoint = source.endpoint;
    this.requestedTokenType = source.requestedTokenType;
    this.audiences = source.audiences;
    this.scopes = source.scopes;
    this.chain = source.chain.map((link) => new CelChainLink(link.sub, link.iss, link.spiffe_id));
    this.chainDepth = BigInt(source.chainDepth);
    this.now = source.now;
  }
}

const TIMESTAMP = 'google.protobuf.Timestamp'; // cel-js has no `timestamp` alias in type declarations
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
  .registerVariable('client', 'tessera.Client')
  .registerVariable('subject', 'tessera.Identity')
  .registerVariable('actor', 'tessera.Actor')
  .registerVariable('request', 'tessera.Request');

/**
 * Calls whose cost is linear in the size of their arguments. A condition made only of these and operators
 * costs O(AST nodes × input size): maxAstNodes bounds one factor, the HTTP and token size caps the other.
 * Anything else (the macros all, exists, exists_one, map, filter, cel.bind, regex `matches`, or a function
 * a later cel-js adds) can blow up polynomially, exponentially or by backtracking: it runs under the watchdog.
 */
const LINEAR_CALLS = new Set([
  'has', 'size', 'dyn', 'type', 'bool', 'bytes', 'double', 'int', 'uint', 'string', 'timestamp', 'duration',
  'startsWith', 'endsWith', 'contains', 'lowerAscii', 'upperAscii', 'trim', 'indexOf', 'lastIndexOf', 'substring',
  'split', 'join',
  'getDate', 'getDayOfMonth', 'getDayOfWeek', 'getDayOfYear', 'getFullYear', 'getHours', 'getMilliseconds',
  'getMinutes', 'getMonth', 'getSeconds',
]);

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

  /** Parses and type-checks once; throws ConditionCompileError (message says what and where, no stack). */
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
    // so evaluation no longer re-checks.
    const checked = program.check();
    if (!checked.valid) throw compileError(source, checked.error);
    // dyn is let through (e.g. `subject.claims.admin`): evaluate() insists on a bool at run time.
    if (checked.type !== 'bool' && checked.type !== 'dyn') {
      throw new ConditionCompileError(`expression must be a bool, but it is ${checked.type}`);
    }
    const problem = findProtoKey(program.ast);
    if (problem) throw new ConditionCompileError(`map key '__proto__' is not allowed ${where(source, problem.start)}`);
    return new PolicyCondition(source, program, needsWatchdog(program.ast), options.timeoutMs ?? CONDITION_LIMITS.timeoutMs);
  }

  /**
   * Never throws. Runtime errors (missing map key, overflow, timeout) come back as {ok:false}.
   * `timeoutMs` overrides the condition's bound for this one evaluation.
   */
  evaluate(input: ConditionInput, options: { readonly timeoutMs?: number } = {}): ConditionResult {
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    try {
      const context = {
        client: new CelClient(input.client.id, input.client.authMethod, input.client.spiffeId),
        subject: new CelIdentity(input.subject),
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

/** A claim or attribute value the broker cannot expose to CEL (non-JSON, too deep). */
class ConditionInputError extends Error {}

/** JSON → CEL value. Objects become Maps: see `toCelMap`. */
function toCelValue(value: unknown, path: string, depth: number): unknown {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      if (Number.isFinite(value)) return value;
      break;
    case 'object': {
      if (value === null) return null;
      if (depth >= MAX_JSON_DEPTH) throw new ConditionInputError(`${path} is nested more than ${MAX_JSON_DEPTH} levels deep`);
      if (Array.isArray(value)) {
        const list: unknown[] = [];
        for (const item of value) list.push(item === undefined ? null : toCelValue(item, path, depth + 1));
        return list;
      }
      const prototype: unknown = Object.getPrototypeOf(value);
      if (prototype === Object.prototype || prototype === null) return toCelMap(value as Record<string, unknown>, path, depth + 1);
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
function toCelMap(record: Readonly<Record<string, unknown>>, path: string, depth: number): Map<string, unknown> {
  const map = new Map<string, unknown>();
  for (const key of Object.keys(record)) {
    const value = record[key];
    if (value !== undefined) map.set(key, toCelValue(value, path, depth));
  }
  return map;
}

const LINEAR_OPERATORS = new Set<string>([
  'value', 'id', '.', '.?', '[]', '[?]', 'list', 'map', '?:', '||', '&&', '!_', '-_',
  '==', '!=', '<', '<=', '>', '>=', 'in', '+', '-', '*', '/', '%',
]);

function needsWatchdog(node: ASTNode): boolean {
  if (node.op === 'call' || node.op === 'rcall') {
    if (!LINEAR_CALLS.has(node.args[0])) return true;
  } else if (!LINEAR_OPERATORS.has(node.op)) {
    return true; // an operator a later cel-js adds: bound it
  }
  return children(node).some(needsWatchdog);
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
 * for conditions that `needsWatchdog`.
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
