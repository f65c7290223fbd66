import { createHash, randomBytes } from 'node:crypto';

/**
 * The hash chain of the audit trail. Each line is one JSON object that starts with `seq` (1, 2, 3… per
 * chain), `prev`, the SHA-256 (base64url) of the previous line of the same chain (its exact bytes without
 * the newline), and `chain`, the id minted when the chain began. Changing, removing or reordering a line
 * breaks the link to the next line of its chain; `tessera audit verify` finds it. The id lets several
 * chains share one stream (the workers of `tessera serve --workers N` on one stdout) and still each verify.
 */

/** `prev` of the first record of a chain: no line before it. */
export const GENESIS = Buffer.alloc(32).toString('base64url');

/**
 * Where a chain stands: its id, the last record's `seq` and the hash of its line (`seq` 0 and GENESIS
 * before the first). No id: a chain continued from a file written before records carried one.
 */
export interface ChainState {
  readonly id?: string | undefined;
  readonly seq: number;
  readonly prev: string;
}

/** Chain ids are what verify tells chains apart by, so each is random: `w2-` names the worker that began it. */
const CHAIN_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** A chain about to begin, with a new id (`w<worker>-<random>` in a fleet, else `<random>`). */
export function freshChain(worker?: number): ChainState {
  const random = randomBytes(9).toString('base64url');
  return { id: worker === undefined ? random : `w${worker}-${random}`, seq: 0, prev: GENESIS };
}

export function lineHash(line: string | Buffer): string {
  return createHash('sha256').update(line).digest('base64url');
}

/**
 * The line for a record whose JSON body (`{...}`, without `seq` and `prev`) is already serialised: the
 * members go first so a reader sees the chain position without parsing the rest.
 */
export function chainedLine(state: ChainState, body: string): { line: string; next: ChainState } {
  const seq = state.seq + 1;
  const chain = state.id === undefined ? '' : `,"chain":"${state.id}"`;
  const line = `{"seq":${seq},"prev":"${state.prev}"${chain}${body.length > 2 ? `,${body.slice(1)}` : '}'}`;
  return { line, next: { id: state.id, seq, prev: lineHash(line) } };
}

/** `seq`, `prev` and `chain` of a line when it is a chained audit record, else undefined. */
export function chainPosition(line: string): { seq: number; prev: string; chain?: string; record: Record<string, unknown> } | undefined {
  let record: unknown;
  try {
    record = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof record !== 'object' || record === null || Array.isArray(record)) return undefined;
  const { seq, prev, chain } = record as { seq?: unknown; prev?: unknown; chain?: unknown };
  if (!Number.isSafeInteger(seq) || (seq as number) < 1 || typeof prev !== 'string') return undefined;
  if (chain !== undefined && (typeof chain !== 'string' || !CHAIN_ID.test(chain))) return undefined;
  return { seq: seq as number, prev, ...(chain === undefined ? {} : { chain }), record: record as Record<string, unknown> };
}
