// What a condition sees, and its conversion to CEL values. Every limit the cost estimate assumes is enforced
// here, as the input is converted: an input over one fails closed.

import { CONDITION_LIMITS } from './condition-limits.js';

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

/** Claims are attacker-shaped JSON: bound the depth we convert (and later compare recursively). */
const MAX_JSON_DEPTH = 32;

// Fixed field lists make `subject.subjct` or `request.chainDepth == 'x'` compile errors; only attributes and
// claims are open maps, with dyn values so `attributes.groups` works both as a string and as a list.
export class CelClient {
  constructor(
    readonly id: string,
    readonly authMethod: string,
    readonly spiffeId: string,
  ) {}
}

export class CelIdentity {
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

export class CelActor extends CelIdentity {
  readonly present: boolean;

  constructor(source: ConditionInput['actor']) {
    super(source, 'actor');
    this.present = source.present;
  }
}

export class CelChainLink {
  constructor(
    readonly sub: string,
    readonly iss: string,
    readonly spiffe_id: string,
  ) {}
}

export class CelRequest {
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
export function inputString(value: string, path: string): string {
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

/** A claim, attribute or field value the broker cannot expose to CEL (non-JSON, too deep, over a size limit). */
export class ConditionInputError extends Error {}

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
