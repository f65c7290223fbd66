import { type Clock, type VerifiedIdentity } from '@tessera/plugin-sdk';
import type { StateStore } from './store.js';
import { storeAnswer } from './unavailable.js';

/** What a kill-switch entry names. */
export const KILL_SWITCH_KINDS = ['jti', 'subject', 'client', 'issuer', 'spiffe-prefix'] as const;
export type KillSwitchKind = (typeof KILL_SWITCH_KINDS)[number];

/** Who or what is revoked. `issuer` narrows a `subject` entry to that issuer's subject; without it, the subject of any issuer. */
export interface KillSwitchTarget {
  readonly kind: KillSwitchKind;
  readonly value: string;
  readonly issuer?: string;
}

export interface KillSwitchEntry extends KillSwitchTarget {
  readonly expiresAt: Date;
  readonly createdAt: Date;
  readonly reason?: string;
  /** Who created it: an admin client id, or `cli`. */
  readonly createdBy?: string;
}

/** Longest a kill-switch entry may last: every entry expires, so the list cannot grow without bound. */
export const MAX_KILL_SWITCH_SECONDS = 366 * 86_400;
const MAX_VALUE_LENGTH = 2_048;
const MAX_REASON_LENGTH = 256;
const MAX_CHAIN_DEPTH = 32;
/** SPIFFE ID syntax (trust domain, then path segments); prefixes end on a segment boundary. */
const SPIFFE_PREFIX = /^spiffe:\/\/[a-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;
const KEY_ROOT = 'kill:';

/** Why a target cannot be an entry, or undefined when it can. Fixed phrases: they are shown to admins. */
export function killSwitchTargetProblem(target: KillSwitchTarget): string | undefined {
  if (!(KILL_SWITCH_KINDS as readonly string[]).includes(target.kind)) return `kind must be one of ${KILL_SWITCH_KINDS.join(', ')}`;
  if (typeof target.value !== 'string' || target.value === '' || target.value.length > MAX_VALUE_LENGTH) return `value must be 1 to ${MAX_VALUE_LENGTH} characters`;
  if (target.issuer !== undefined) {
    if (target.kind !== 'subject') return 'issuer narrows only a subject entry';
    if (typeof target.issuer !== 'string' || target.issuer === '' || target.issuer.length > MAX_VALUE_LENGTH) return `issuer must be 1 to ${MAX_VALUE_LENGTH} characters`;
  }
  if (target.kind === 'spiffe-prefix' && !SPIFFE_PREFIX.test(target.value)) return 'value must be a SPIFFE ID (spiffe://trust-domain/path, no trailing slash)';
  return undefined;
}

/** A refusal's cause, for the audit record: the kind of entry that matched. */
export interface KillSwitchMatch {
  readonly kind: KillSwitchKind;
}

/** The identities one request involves; a check is one store round trip over all their keys. */
export class KillSwitchQuery {
  readonly #keys = new Map<string, KillSwitchKind>();

  client(id: string): this {
    this.#add('client', targetKey({ kind: 'client', value: id }));
    return this.spiffeId(id);
  }

  jti(jti: string): this {
    this.#add('jti', targetKey({ kind: 'jti', value: jti }));
    return this;
  }

  /** A subject of `issuer`: entries for it there, for it anywhere, for the whole issuer, and its SPIFFE ancestors. */
  subject(subject: string, issuer?: string): this {
    this.#add('subject', targetKey({ kind: 'subject', value: subject }));
    if (issuer !== undefined) {
      this.#add('subject', targetKey({ kind: 'subject', value: subject, issuer }));
      this.issuer(issuer);
    }
    return this.spiffeId(subject);
  }

  issuer(issuer: string): this {
    this.#add('issuer', targetKey({ kind: 'issuer', value: issuer }));
    return this;
  }

  /** Every path-segment prefix of a SPIFFE ID: spiffe://td, spiffe://td/ns, ..., the ID itself. */
  spiffeId(id: string): this {
    if (!id.startsWith('spiffe://')) return this;
    const afterScheme = 'spiffe://'.length;
    const slash = id.indexOf('/', afterScheme);
    // Trust domains compare case-insensitively; paths do not.
    const normalized = slash < 0 ? id.toLowerCase() : id.slice(0, slash).toLowerCase() + id.slice(slash);
    for (let at = normalized.indexOf('/', afterScheme); at >= 0; at = normalized.indexOf('/', at + 1)) {
      this.#add('spiffe-prefix', targetKey({ kind: 'spiffe-prefix', value: normalized.slice(0, at) }));
    }
    this.#add('spiffe-prefix', targetKey({ kind: 'spiffe-prefix', value: normalized.replace(/\/+$/, '') }));
    return this;
  }

  /** A verified identity: its subject and issuer, and for a token of this broker its `jti` and `client_id`. */
  identity(identity: VerifiedIdentity, brokerIssuer: string): this {
    this.subject(identity.subject, identity.issuer);
    const spiffeId = identity.attributes.spiffe_id;
    if (typeof spiffeId === 'string') this.spiffeId(spiffeId);
    if (identity.issuer === brokerIssuer) this.ownTokenClaims(identity.claims);
    return this;
  }

  /** Claims of a token this broker issued: `jti`, `sub`, `client_id` and every member of its `act` chain. */
  ownTokenClaims(payload: object): this {
    const claims = payload as Readonly<Record<string, unknown>>;
    if (typeof claims.jti === 'string') this.jti(claims.jti);
    if (typeof claims.sub === 'string') this.subject(claims.sub, typeof claims.iss === 'string' ? claims.iss : undefined);
    if (typeof claims.client_id === 'string') this.client(claims.client_id);
    let act = claims.act;
    for (let depth = 0; depth < MAX_CHAIN_DEPTH && typeof act === 'object' && act !== null && !Array.isArray(act); depth++) {
      const member = act as Record<string, unknown>;
      if (typeof member.sub === 'string') this.subject(member.sub, typeof member.iss === 'string' ? member.iss : undefined);
      if (typeof member.spiffe_id === 'string') this.spiffeId(member.spiffe_id);
      act = member.act;
    }
    return this;
  }

  /** A chain member as the delegation step flattened it. */
  member(member: { readonly sub: string; readonly iss?: string; readonly spiffe_id?: string }): this {
    this.subject(member.sub, member.iss);
    if (member.spiffe_id !== undefined) this.spiffeId(member.spiffe_id);
    return this;
  }

  get keys(): readonly string[] {
    return [...this.#keys.keys()];
  }

  kindOf(key: string): KillSwitchKind {
    return this.#keys.get(key)!;
  }

  #add(kind: KillSwitchKind, key: string): void {
    if (!this.#keys.has(key)) this.#keys.set(key, kind);
  }
}

/**
 * Operator revocations by token, subject, client, subject issuer or SPIFFE ID prefix, each with an
 * expiry, on the state store shared by every replica. A store outage rejects with
 * `TemporarilyUnavailable`: a request is never let through because the list could not be read.
 */
export class KillSwitch {
  constructor(
    private readonly store: StateStore,
    private readonly clock: Clock,
  ) {}

  /** Adds (or replaces) the entry for a target; an existing later expiry is kept. */
  async add(target: KillSwitchTarget, options: { expiresAt: Date; reason?: string; createdBy?: string }): Promise<KillSwitchEntry> {
    const problem = killSwitchTargetProblem(target);
    if (problem) throw new RangeError(problem);
    const now = this.clock.now();
    const ttlMs = options.expiresAt.getTime() - now.getTime();
    if (ttlMs <= 0 || ttlMs > MAX_KILL_SWITCH_SECONDS * 1000) throw new RangeError(`expiry must be in the future, at most ${MAX_KILL_SWITCH_SECONDS / 86_400} days ahead`);
    if (options.reason !== undefined && options.reason.length > MAX_REASON_LENGTH) throw new RangeError(`reason must be at most ${MAX_REASON_LENGTH} characters`);
    const entry: KillSwitchEntry = {
      kind: target.kind,
      value: target.value,
      ...(target.issuer !== undefined ? { issuer: target.issuer } : {}),
      expiresAt: options.expiresAt,
      createdAt: now,
      ...(options.reason !== undefined ? { reason: options.reason } : {}),
      ...(options.createdBy !== undefined ? { createdBy: options.createdBy } : {}),
    };
    await storeAnswer(this.store.put(targetKey(target), JSON.stringify(entry), ttlMs), 'kill switch');
    return entry;
  }

  /** Every unexpired entry, oldest first. */
  async list(): Promise<KillSwitchEntry[]> {
    const found = await storeAnswer(this.store.list(KEY_ROOT), 'kill switch');
    const entries = found.flatMap(({ value, expiresAt }) => {
      const entry = parseEntry(value);
      // The store's own expiry is the truth: a later revocation may have extended it.
      return entry ? [{ ...entry, expiresAt }] : [];
    });
    return entries.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
  }

  /** Whether there is an entry for a target. */
  async has(target: KillSwitchTarget): Promise<boolean> {
    const problem = killSwitchTargetProblem(target);
    if (problem) throw new RangeError(problem);
    const [existing] = await storeAnswer(this.store.getMany([targetKey(target)]), 'kill switch');
    return existing !== undefined;
  }

  /** Removes the entry for a target; false when there was none. */
  async remove(target: KillSwitchTarget): Promise<boolean> {
    const problem = killSwitchTargetProblem(target);
    if (problem) throw new RangeError(problem);
    const key = targetKey(target);
    const [existing] = await storeAnswer(this.store.getMany([key]), 'kill switch');
    if (existing === undefined) return false;
    await storeAnswer(this.store.delete(key), 'kill switch');
    return true;
  }

  /** The first entry any identity of the query matches, in one store round trip. */
  async match(query: KillSwitchQuery): Promise<KillSwitchMatch | undefined> {
    const keys = query.keys;
    if (keys.length === 0) return undefined;
    const values = await storeAnswer(this.store.getMany(keys), 'kill switch');
    const index = values.findIndex((value) => value !== undefined);
    return index < 0 ? undefined : { kind: query.kindOf(keys[index]!) };
  }
}

function targetKey(target: KillSwitchTarget): string {
  // JSON keeps a subject and its issuer apart whatever characters either holds.
  const value = target.kind === 'subject' ? JSON.stringify(target.issuer === undefined ? [target.value] : [target.issuer, target.value]) : target.value;
  return `${KEY_ROOT}${target.kind}:${value}`;
}

function parseEntry(text: string): KillSwitchEntry | undefined {
  try {
    const raw = JSON.parse(text) as Record<string, unknown>;
    if (typeof raw.kind !== 'string' || typeof raw.value !== 'string' || typeof raw.createdAt !== 'string') return undefined;
    return {
      kind: raw.kind as KillSwitchKind,
      value: raw.value,
      ...(typeof raw.issuer === 'string' ? { issuer: raw.issuer } : {}),
      expiresAt: new Date(String(raw.expiresAt)),
      createdAt: new Date(raw.createdAt),
      ...(typeof raw.reason === 'string' ? { reason: raw.reason } : {}),
      ...(typeof raw.createdBy === 'string' ? { createdBy: raw.createdBy } : {}),
    };
  } catch {
    return undefined;
  }
}
