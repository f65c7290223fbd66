import { createReadStream } from 'node:fs';
import { chainPosition, GENESIS, lineHash } from './chain.js';

export interface ChainBreak {
  readonly file: string;
  /** 1-based line number in `file`. */
  readonly line: number;
  readonly reason: string;
}

/** Where a chain's first record in the files is, when the files hold a later part of it only. */
export interface ChainJoin {
  /** The chain id; absent for records written before records carried one. */
  readonly chain?: string;
  readonly file: string;
  readonly line: number;
  readonly seq: number;
}

export interface VerifyReport {
  readonly records: number;
  readonly files: number;
  /** Chains begun inside the files (`event: "chain"`): each start of `tessera serve` (or of a worker) on a new file or stream. */
  readonly chains: number;
  /**
   * Chains whose first record in the files is not their start: their older part is in a file not given
   * (rotated away, or a capture that began late). Each still verifies from there on.
   */
  readonly joined: readonly ChainJoin[];
  /** Application log lines skipped (audit to stderr mixes them in). */
  readonly skipped: number;
  /** Set when an unfinished last line (the writer was killed mid-write) was left out. */
  readonly unfinished?: { readonly file: string; readonly line: number };
  readonly broken?: ChainBreak;
}

interface Previous {
  readonly file: string;
  readonly line: number;
  readonly seq: number;
  readonly hash: string;
}

interface Where {
  readonly file: string;
  readonly line: number;
}

/** One chain's progress through the files. */
interface Tracked {
  previous: Previous;
  /** A prev that does not match: either the line after it or the line before was changed; the chain's next record tells. */
  suspect?: { readonly before: Where; readonly after: Where; readonly order: number } | undefined;
}

/** Lines of a file as raw bytes, without their newline; the last one reports whether it had one. */
async function* lines(file: string): AsyncGenerator<{ bytes: Buffer; terminated: boolean }> {
  let rest = Buffer.alloc(0);
  for await (const chunk of createReadStream(file)) {
    const data = rest.length > 0 ? Buffer.concat([rest, chunk as Buffer]) : (chunk as Buffer);
    let start = 0;
    for (let end = data.indexOf(0x0a); end >= 0; end = data.indexOf(0x0a, start)) {
      yield { bytes: data.subarray(start, end), terminated: true };
      start = end + 1;
    }
    rest = Buffer.from(data.subarray(start));
  }
  if (rest.length > 0) yield { bytes: rest, terminated: false };
}

/**
 * Checks the hash chains across `files`, read in the order given (oldest rotated file first). Records are
 * followed per chain id, so chains interleaved in one stream (the workers of `--workers N` on one stdout)
 * each verify, whatever the order of the files of different chains. A chain's first record in the files
 * may sit anywhere in it (older files may be gone; it is listed in `joined`); every later one must follow
 * the one before in its chain (`seq` + 1, `prev` = hash of its line). A chain begins once, with an
 * `event: "chain"` record; records without an id (older files) count as one chain, which such a record
 * may begin anew. Stops at the first break. A record changed in place is reported at its own line: the next record of its chain no longer
 * points at it. The last record of each chain has no successor, so only its form is checked.
 */
export async function verifyAuditFiles(files: readonly string[]): Promise<VerifyReport> {
  const tracked = new Map<string | undefined, Tracked>();
  const joined: ChainJoin[] = [];
  let records = 0;
  let chains = 0;
  let skipped = 0;
  let order = 0;
  let unfinished: VerifyReport['unfinished'];
  const report = (broken?: ChainBreak): VerifyReport => ({ records, files: files.length, chains, joined, skipped, ...(unfinished ? { unfinished } : {}), ...(broken ? { broken } : {}) });

  for (const [fileIndex, file] of files.entries()) {
    let number = 0;
    try {
      for await (const { bytes, terminated } of lines(file)) {
        number += 1;
        order += 1;
        if (!terminated) {
          // Only a crash leaves one, at the very end; its write never returned, so nobody was answered for it.
          if (fileIndex === files.length - 1) {
            unfinished = { file, line: number };
            break;
          }
          return report({ file, line: number, reason: 'unfinished line (no newline) before the last file' });
        }
        const text = bytes.toString('utf8');
        const position = chainPosition(text);
        if (!position) {
          let parsed: unknown;
          try {
            parsed = JSON.parse(text);
          } catch {
            return report({ file, line: number, reason: 'not JSON' });
          }
          if (typeof parsed === 'object' && parsed !== null && (parsed as { log?: unknown }).log !== 'audit') {
            skipped += 1;
            continue;
          }
          return report({ file, line: number, reason: 'not a chained audit record (seq, prev, chain)' });
        }
        const { seq, prev, chain, record } = position;
        const state = tracked.get(chain);
        const previous = state?.previous;
        const linked = previous !== undefined && prev === previous.hash && seq === previous.seq + 1;
        if (state?.suspect) {
          // The chain's record after a broken link tells which side changed: it still points at an intact line.
          if (linked) return report({ ...state.suspect.before, reason: 'changed: its hash is not the prev of the next record' });
          return report({ ...state.suspect.after, reason: 'changed: its prev is not the hash of the record before' });
        }
        let suspect: Tracked['suspect'];
        if (record.event === 'chain') {
          if (seq !== 1 || prev !== GENESIS) return report({ file, line: number, reason: 'a new chain must start at seq 1 with the genesis prev' });
          // Every chain begins with an id of its own, so one seen begun again means files out of order or records spliced in.
          if (chain !== undefined && state) return report({ file, line: number, reason: `chain ${chain} begins again (already seen up to ${state.previous.file}:${state.previous.line}): files out of order, or records copied in` });
          chains += 1;
        } else if (!previous) {
          joined.push({ ...(chain === undefined ? {} : { chain }), file, line: number, seq });
        } else if (!linked) {
          if (seq !== previous.seq + 1) return report({ file, line: number, reason: `seq ${seq} does not follow seq ${previous.seq} (${previous.file}:${previous.line}): a record is missing, repeated or out of order` });
          suspect = { before: { file: previous.file, line: previous.line }, after: { file, line: number }, order };
        }
        tracked.set(chain, { previous: { file, line: number, seq, hash: lineHash(bytes) }, suspect });
        records += 1;
      }
    } catch (error) {
      return report({ file, line: number, reason: `cannot read: ${(error as NodeJS.ErrnoException).code ?? 'error'}` });
    }
  }
  // No record after it to tell: the earlier line is the usual culprit (an edited record), so name both.
  const suspect = [...tracked.values()].flatMap((state) => (state.suspect ? [state.suspect] : [])).sort((a, b) => a.order - b.order)[0];
  if (suspect) return report({ ...suspect.before, reason: `changed, or the prev of ${suspect.after.file}:${suspect.after.line}: its hash is not the prev of the next record` });
  return report();
}

/** `tessera audit verify FILE...`: the first break as `FILE:LINE: reason` on stderr (exit 1), else a summary (exit 0). */
export async function auditVerifyCommand(files: readonly string[], out: (text: string) => void, err: (text: string) => void): Promise<number> {
  const report = await verifyAuditFiles(files);
  if (report.broken) {
    err(`${report.broken.file}:${report.broken.line}: ${report.broken.reason}\n`);
    return 1;
  }
  const notes = [
    ...(report.chains > 0 ? [`${report.chains} new chain${report.chains === 1 ? '' : 's'} begun`] : []),
    ...(report.joined.length > 0 ? [`${report.joined.length} begun before these files: ${describeJoins(report.joined)}`] : []),
    ...(report.skipped > 0 ? [`${report.skipped} other lines skipped`] : []),
    ...(report.unfinished ? [`unfinished last line ${report.unfinished.file}:${report.unfinished.line} left out`] : []),
  ];
  out(`chain intact: ${report.records} records in ${report.files} file${report.files === 1 ? '' : 's'}${notes.length > 0 ? ` (${notes.join(', ')})` : ''}\n`);
  return 0;
}

/** The first few chains that begin before the files, where their first record is. */
function describeJoins(joins: readonly ChainJoin[]): string {
  const shown = joins.slice(0, 3).map((join) => `${join.chain ?? 'unnamed'} at ${join.file}:${join.line} seq ${join.seq}`);
  return `${shown.join(', ')}${joins.length > 3 ? `, ${joins.length - 3} more` : ''}`;
}
