// The static worst-case cost of a condition: over CONDITION_LIMITS.maxCost it is refused at load, and one
// the model bounds fully (no loop, bind or unknown call) runs without the watchdog.

import type { ASTNode } from '@marcbachmann/cel-js';
import { children } from './cel-ast.js';
import { BOUNDED_DURATION } from './condition-duration.js';
import { CONDITION_LIMITS } from './condition-limits.js';
import { CelRegex, RE2_MATCHES, maxRuntimeProgram } from './condition-regex.js';

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

export function estimateCost(ast: ASTNode): CostReport {
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
