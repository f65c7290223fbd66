import fs from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, resolve as resolvePath } from 'node:path';
import type { Logger } from '@tessera/plugin-sdk';
import type { BrokerConfig } from '../config/schema.js';
import { AuditSinkError, type AuditEntry, type AuditSink } from './audit-log.js';
import { chainedLine, chainPosition, freshChain, lineHash, type ChainState } from './chain.js';

export type FsyncPolicy = 'never' | 'always' | 'interval';

export interface ChainedSinkOptions {
  /** `always`: a record counts as stored once fsync returned; `interval`: fsync in the background. */
  readonly fsync: FsyncPolicy;
  readonly fsyncIntervalMs: number;
  /** Records waiting for the write in flight; past it `record` rejects at once (backpressure, not memory). */
  readonly maxPendingRecords: number;
  /** A write (and its fsync) not done by then fails its batch and breaks the sink until one completes. */
  readonly writeTimeoutMs: number;
  readonly log: Logger;
  /** The slot of a `tessera serve --workers N` worker (1…N): a chain it begins has an id starting `w<slot>-`. */
  readonly worker?: number | undefined;
}

/** An inherited descriptor (stdout, stderr) or a file path. */
export type AuditTarget = { readonly fd: number; readonly name: string } | { readonly path: string };

/** How often the path of a file sink is checked for a rename or delete (logrotate without a signal). */
const ROTATION_CHECK_MS = 1_000;
/** While broken, how often a write is tried with no traffic, so readiness can recover on its own. */
const RETRY_MS = 1_000;
/** Startup reads at most this much of an existing file to find its last record. */
const TAIL_BYTES = 1 << 20;

interface Pending {
  readonly body: string;
  readonly resolve: () => void;
  readonly reject: (error: AuditSinkError) => void;
}

interface OpenFile {
  readonly path: string;
  readonly dev: number;
  readonly ino: number;
}

const call = <T>(run: (done: (error: NodeJS.ErrnoException | null, value?: T) => void) => void) =>
  new Promise<T>((resolve, reject) => run((error, value) => (error ? reject(error) : resolve(value as T))));
const writeSome = (fd: number, buffer: Buffer, offset: number) => call<number>((done) => fs.write(fd, buffer, offset, buffer.length - offset, null, done));
const fsyncFd = (fd: number) => call<void>((done) => fs.fsync(fd, done));
const fstatFd = (fd: number) => call<fs.Stats>((done) => fs.fstat(fd, done));
const closeFd = (fd: number) => call<void>((done) => fs.close(fd, done));
const truncateFd = (fd: number, size: number) => call<void>((done) => fs.ftruncate(fd, size, done));
const openPath = (path: string) => call<number>((done) => fs.open(path, 'a+', 0o640, done));
const statPath = (path: string) => call<fs.Stats>((done) => fs.stat(path, done));
const readAt = (fd: number, buffer: Buffer, position: number) => call<number>((done) => fs.read(fd, buffer, 0, buffer.length, position, done));
const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms));

function describe(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  return code ? `write failed: ${code}` : 'write failed';
}

/** Bytes a pipe writes in one piece (POSIX `PIPE_BUF`): 4096 on Linux, the POSIX minimum 512 elsewhere (macOS). */
const PIPE_BUF = process.platform === 'linux' ? 4096 : 512;

/** `buffer` (lines ending in a newline) cut into runs of whole lines of at most `limit` bytes; a longer line is a piece of its own. */
export function wholeLinePieces(buffer: Buffer, limit: number): Buffer[] {
  const pieces: Buffer[] = [];
  let start = 0;
  let end = 0;
  while (end < buffer.length) {
    const next = buffer.indexOf(0x0a, end) + 1 || buffer.length;
    if (next - start > limit && end > start) {
      pieces.push(buffer.subarray(start, end));
      start = end;
    }
    end = next;
  }
  if (end > start) pieces.push(buffer.subarray(start, end));
  return pieces;
}

/** The whole buffer, however many writes it takes; EAGAIN (a non-blocking pipe that is full) is retried. */
async function writeAll(fd: number, buffer: Buffer): Promise<void> {
  let offset = 0;
  while (offset < buffer.length) {
    try {
      offset += await writeSome(fd, buffer, offset);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') throw error;
      await sleep(2);
    }
  }
}

/**
 * Audit records as hash-chained JSON lines on a file descriptor (stdout, stderr or a file), written with
 * group commit: records that arrive while a write is in flight go out together in the next one, and each
 * caller's promise settles with its batch. A failed batch leaves no line behind in a file (it is truncated
 * back), so there is never an `allow` record for a request that was refused.
 */
export class ChainedAuditSink implements AuditSink {
  #fd: number;
  /** Opened here (a path), so closed here; stdout and stderr are not. */
  readonly #owned: boolean;
  /** Set for a regular file: it can be truncated, synced, rotated. */
  #file: OpenFile | undefined;
  readonly #path: string | undefined;
  /** Bytes of the file that are whole, acknowledged lines. */
  #size: number;
  #chain: ChainState;
  #pending: Pending[] = [];
  /** A record of the sink's own (a new chain, a recovery) that leads the next batch. */
  #notice: Record<string, unknown> | undefined;
  #running = false;
  /** A timed-out write is still in flight: nothing else may be written until it ends. */
  #stuck = false;
  #problem: string | undefined;
  #brokenSince: string | undefined;
  #reopenWanted: string | undefined;
  #reopenWaiters: (() => void)[] = [];
  #checkedAt = Date.now();
  #dirty = false;
  #closed = false;
  #idleWaiters: (() => void)[] = [];
  #rejectedSinceLog = 0;
  #batches = 0;
  #loggedAt = 0;
  readonly #timers: NodeJS.Timeout[] = [];
  #retry: NodeJS.Timeout | undefined;

  private constructor(
    fd: number,
    owned: boolean,
    file: OpenFile | undefined,
    path: string | undefined,
    size: number,
    chain: ChainState,
    notice: Record<string, unknown> | undefined,
    private readonly options: ChainedSinkOptions,
  ) {
    this.#fd = fd;
    this.#owned = owned;
    this.#file = file;
    this.#path = path;
    this.#size = size;
    this.#chain = chain;
    this.#notice = notice;
    if (path !== undefined) this.#every(ROTATION_CHECK_MS, () => this.#kick());
    if (options.fsync === 'interval' && file) this.#every(options.fsyncIntervalMs, () => this.#backgroundSync());
  }

  /**
   * Opens the target and finds where its chain stands. A file that ends in a chained record is continued
   * (its `chain` id, `seq` + 1, `prev` = hash of that line); an unfinished last line (the process was killed mid-write, so
   * no client was answered for it) is truncated; anything else starts a new chain with a new id, announced
   * by a record with `event: "chain"`. Rejects only when the file cannot be opened.
   */
  static async open(target: AuditTarget, options: ChainedSinkOptions): Promise<ChainedAuditSink> {
    if ('fd' in target) {
      const sink = new ChainedAuditSink(target.fd, false, undefined, undefined, 0, freshChain(options.worker), { event: 'chain', reason: `new chain on ${target.name}` }, options);
      sink.#kick();
      return sink;
    }
    await mkdir(dirname(target.path), { recursive: true });
    const fd = await openPath(target.path);
    try {
      const stats = await fstatFd(fd);
      if (!stats.isFile()) {
        const sink = new ChainedAuditSink(fd, true, undefined, undefined, 0, freshChain(options.worker), { event: 'chain', reason: 'new chain: not a regular file' }, options);
        sink.#kick();
        return sink;
      }
      const tail = await readTail(fd, stats.size, target.path, options.log);
      const file = { path: target.path, dev: stats.dev, ino: stats.ino };
      const sink = new ChainedAuditSink(fd, true, file, target.path, tail.size, tail.chain ?? freshChain(options.worker), tail.chain ? undefined : { event: 'chain', reason: tail.reason }, options);
      sink.#kick();
      return sink;
    } catch (error) {
      await closeFd(fd).catch(() => undefined);
      throw error;
    }
  }

  record(entry: AuditEntry): Promise<void> {
    if (this.#closed) return Promise.reject(new AuditSinkError('closed'));
    if (this.#stuck) return this.#refuse(this.#problem ?? 'write stalled');
    if (this.#pending.length >= this.options.maxPendingRecords) return this.#refuse(`more than ${this.options.maxPendingRecords} records waiting`);
    const body = JSON.stringify({ time: new Date().toISOString(), log: 'audit', ...entry });
    return new Promise((resolve, reject) => {
      this.#pending.push({ body, resolve, reject });
      this.#kick();
    });
  }

  /** Why the sink cannot store records right now (broken, stalled, closed), or undefined. */
  problem(): string | undefined {
    if (this.#closed) return 'closed';
    return this.#problem;
  }

  /** Where the chain stands (tests, the shutdown log). */
  get chain(): ChainState {
    return this.#chain;
  }

  /** Batches written so far: with group commit, far fewer than records under load. */
  get batches(): number {
    return this.#batches;
  }

  /** Reopens the file at its path (SIGHUP after logrotate). Resolves once done; a no-op for stdout/stderr. */
  reopen(): Promise<void> {
    if (this.#path === undefined || this.#closed) return Promise.resolve();
    this.#reopenWanted = 'requested';
    const done = new Promise<void>((resolve) => this.#reopenWaiters.push(resolve));
    this.#kick();
    return done;
  }

  /**
   * Stops taking records and waits at most `timeoutMs` for the ones accepted to be written. Resolves
   * false, with a log line, when a write was still stuck: the caller exits non-zero instead of hanging.
   */
  async close(timeoutMs: number): Promise<boolean> {
    if (this.#closed) return true;
    this.#closed = true;
    for (const timer of this.#timers) clearInterval(timer);
    clearTimeout(this.#retry);
    let timer: NodeJS.Timeout | undefined;
    const idle = this.#running || this.#stuck ? new Promise<boolean>((done) => this.#idleWaiters.push(() => done(true))) : Promise.resolve(true);
    const flushed = await Promise.race([idle, new Promise<boolean>((done) => (timer = setTimeout(() => done(false), timeoutMs)))]);
    clearTimeout(timer);
    if (!flushed) {
      this.options.log.error({ timeoutMs, waiting: this.#pending.length, problem: this.#problem }, 'audit: the sink did not finish writing in time at shutdown');
      return false;
    }
    if (this.#file && this.options.fsync !== 'never' && this.#dirty) await fsyncFd(this.#fd).catch(() => undefined);
    if (this.#owned) await closeFd(this.#fd).catch(() => undefined);
    return true;
  }

  #refuse(reason: string): Promise<void> {
    // One log line per 10 s for the refusals the sink makes on its own; each endpoint logs its request too.
    this.#rejectedSinceLog += 1;
    if (Date.now() - this.#loggedAt > 10_000) {
      this.options.log.error({ reason, refused: this.#rejectedSinceLog }, 'audit: records refused');
      this.#loggedAt = Date.now();
      this.#rejectedSinceLog = 0;
    }
    return Promise.reject(new AuditSinkError(reason));
  }

  #every(ms: number, run: () => void): void {
    const timer = setInterval(run, ms);
    timer.unref();
    this.#timers.push(timer);
  }

  #kick(): void {
    if (this.#running || this.#stuck) return;
    this.#running = true;
    queueMicrotask(() => void this.#run());
  }

  async #run(): Promise<void> {
    try {
      while (!this.#stuck) {
        if (this.#path !== undefined && (this.#reopenWanted !== undefined || Date.now() - this.#checkedAt >= ROTATION_CHECK_MS)) await this.#followPath();
        if (this.#pending.length === 0 && this.#notice === undefined) break;
        // After a failure only records that came in meanwhile get their try; the retry timer does the rest.
        if (!(await this.#writeBatch(this.#pending.splice(0))) && this.#pending.length === 0) break;
      }
    } catch (error) {
      this.options.log.error({ err: error }, 'audit: sink fault');
    } finally {
      this.#running = false;
      if (!this.#stuck) for (const done of this.#idleWaiters.splice(0)) done();
    }
  }

  /** Reopens when asked to, or when the path no longer names the open file (renamed or deleted). */
  async #followPath(): Promise<void> {
    const path = this.#path!;
    this.#checkedAt = Date.now();
    let reason = this.#reopenWanted;
    if (reason === undefined) {
      try {
        const stats = await statPath(path);
        if (!this.#file || stats.dev !== this.#file.dev || stats.ino !== this.#file.ino) reason = 'another file is at the path (rotated)';
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') return;
        reason = 'the file was moved or deleted';
      }
    }
    if (reason === undefined) return;
    try {
      await mkdir(dirname(path), { recursive: true });
      const fd = await openPath(path);
      const stats = await fstatFd(fd);
      const old = this.#fd;
      this.#fd = fd;
      this.#file = stats.isFile() ? { path, dev: stats.dev, ino: stats.ino } : undefined;
      this.#size = stats.size;
      this.#reopenWanted = undefined;
      if (this.options.fsync !== 'never') await fsyncFd(old).catch(() => undefined);
      await closeFd(old).catch(() => undefined);
      // The chain goes on in the new file: `tessera audit verify old new` checks the link between them.
      this.options.log.info({ path, reason, seq: this.#chain.seq }, 'audit: file reopened');
    } catch (error) {
      // Writing on into a deleted or renamed file would look fine and lose the records: fail until it opens.
      this.#reopenWanted = reason;
      const code = (error as NodeJS.ErrnoException).code ?? 'error';
      this.#fail(`cannot reopen the audit file: ${code}`);
    } finally {
      for (const done of this.#reopenWaiters.splice(0)) done();
    }
  }

  /** Writes one batch (after the pending notice); true when it was stored and its callers resolved. */
  async #writeBatch(batch: Pending[]): Promise<boolean> {
    if (this.#reopenWanted !== undefined) {
      this.#rejectAll(batch, this.#problem ?? 'cannot reopen the audit file');
      return false;
    }
    if (this.#file) await this.#catchUp();
    const before = this.#chain;
    const sizeBefore = this.#size;
    const notice = this.#notice;
    const lines: string[] = [];
    let state = before;
    for (const body of [...(notice ? [JSON.stringify({ time: new Date().toISOString(), log: 'audit', ...notice })] : []), ...batch.map((pending) => pending.body)]) {
      const chained = chainedLine(state, body);
      lines.push(chained.line);
      state = chained.next;
    }
    const buffer = Buffer.from(`${lines.join('\n')}\n`);
    const fd = this.#fd;
    const operation = this.#commit(fd, buffer);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((done) => (timer = setTimeout(() => done('timeout'), this.options.writeTimeoutMs)));
    let outcome: 'ok' | 'timeout' | Error;
    try {
      outcome = await Promise.race([operation.then(() => 'ok' as const), timedOut]);
    } catch (error) {
      outcome = error as Error;
    } finally {
      clearTimeout(timer);
    }

    if (outcome === 'ok') {
      this.#chain = state;
      this.#size = sizeBefore + buffer.length;
      this.#notice = undefined;
      this.#dirty = true;
      this.#batches += 1;
      if (this.#problem !== undefined) {
        this.options.log.info({ since: this.#brokenSince, was: this.#problem }, 'audit: sink writable again');
        this.#problem = undefined;
        this.#brokenSince = undefined;
        clearTimeout(this.#retry);
      }
      for (const pending of batch) pending.resolve();
      return true;
    }
    if (outcome === 'timeout') {
      const reason = `write not completed within ${this.options.writeTimeoutMs} ms`;
      this.#stuck = true;
      this.#fail(reason);
      this.#rejectAll(batch, reason);
      this.#rejectAll(this.#pending.splice(0), reason);
      const records = batch.length > 0 ? { fromSeq: state.seq - batch.length + 1, toSeq: state.seq } : undefined;
      operation.then(
        () => this.#unstick(sizeBefore, buffer.length, state, records),
        () => this.#unstick(sizeBefore, buffer.length, undefined, records),
      );
      return false;
    }
    await this.#rollBack(fd, sizeBefore, buffer.length);
    this.#fail(describe(outcome));
    this.#rejectAll(batch, this.#problem!);
    return false;
  }

  /**
   * Another process appended to the file in between: go on from its last line, so the chain does not
   * fork. Whole lines only; its unfinished line is left alone. Simultaneous writers can still fork it.
   */
  async #catchUp(): Promise<void> {
    try {
      const { size } = await fstatFd(this.#fd);
      if (size === this.#size) return;
      const tail = await readTail(this.#fd, size, this.#file!.path, this.options.log, false);
      if (tail.reason === 'unfinished last line') return;
      // No chained last line (an emptied file): our chain goes on.
      if (tail.chain) this.#chain = tail.chain;
      this.#size = tail.size;
    } catch (error) {
      this.options.log.error({ err: error }, 'audit: could not read the file the sink appends to');
    }
  }

  async #commit(fd: number, buffer: Buffer): Promise<void> {
    if (this.#file || this.options.worker === undefined) await writeAll(fd, buffer);
    // Workers share stdout/stderr: a pipe write of at most PIPE_BUF is never interleaved with another's,
    // so a batch goes out in whole-line pieces that fit, and no worker's line is split by another's.
    else for (const piece of wholeLinePieces(buffer, PIPE_BUF)) await writeAll(fd, piece);
    if (this.options.fsync === 'always' && this.#file) await fsyncFd(fd);
  }

  /**
   * A timed-out write ended. Its records were refused, so they must not stand: a file is truncated back;
   * on a pipe the lines are out already, so the chain takes them and the recovery record voids them.
   */
  async #unstick(sizeBefore: number, length: number, written: ChainState | undefined, records: { fromSeq: number; toSeq: number } | undefined): Promise<void> {
    if (this.#file) await this.#rollBack(this.#fd, sizeBefore, length);
    else if (written) {
      this.#chain = written;
      this.#notice = {
        event: 'sink',
        outcome: 'recovered',
        reason: this.#problem,
        brokenSince: this.#brokenSince,
        ...(records ? { voided: records, voidReason: 'written after the write timeout; these requests were refused' } : {}),
      };
    }
    this.#stuck = false;
    if (this.#closed) for (const done of this.#idleWaiters.splice(0)) done();
    this.#kick();
  }

  /** Drops the bytes of a failed batch from a file; other writers' bytes (a size past ours) are left alone. */
  async #rollBack(fd: number, sizeBefore: number, length: number): Promise<void> {
    if (!this.#file) return;
    try {
      const { size } = await fstatFd(fd);
      if (size > sizeBefore && size <= sizeBefore + length) await truncateFd(fd, sizeBefore);
    } catch (error) {
      this.options.log.error({ err: error }, 'audit: could not remove a failed write from the file');
    }
  }

  #fail(reason: string): void {
    if (this.#problem === undefined) {
      this.#brokenSince = new Date().toISOString();
      this.options.log.error({ reason, path: this.#path }, 'audit: sink broken, requests are refused until a write succeeds');
    }
    this.#problem = reason;
    // The first record written again says the trail has a gap, and since when (a new chain keeps its notice).
    if (this.#notice?.event !== 'chain') this.#notice = { ...this.#notice, event: 'sink', outcome: 'recovered', reason, brokenSince: this.#brokenSince };
    this.#scheduleRetry();
  }

  #scheduleRetry(): void {
    clearTimeout(this.#retry);
    if (this.#closed) return;
    this.#retry = setTimeout(() => {
      if (this.#problem === undefined || this.#closed) return;
      this.#kick();
      this.#scheduleRetry();
    }, RETRY_MS);
    this.#retry.unref();
  }

  #rejectAll(batch: Pending[], reason: string): void {
    const error = new AuditSinkError(reason);
    for (const pending of batch) pending.reject(error);
  }

  #backgroundSync(): void {
    if (!this.#dirty || this.#stuck || !this.#file) return;
    this.#dirty = false;
    fsyncFd(this.#fd).catch((error: unknown) => this.options.log.error({ err: error }, 'audit: fsync failed'));
  }
}

/**
 * Where the chain of an existing file stands. An unfinished last line is cut off: its write never
 * returned, so no client was answered for it.
 */
async function readTail(fd: number, size: number, path: string, log: Logger, cutUnfinished = true): Promise<{ size: number; chain?: ChainState; reason: string }> {
  if (size === 0) return { size, reason: 'new chain: new file' };
  const length = Math.min(size, TAIL_BYTES);
  const buffer = Buffer.alloc(length);
  let read = 0;
  while (read < length) read += await readAt(fd, buffer.subarray(read), size - length + read);
  let end = length;
  if (buffer[length - 1] !== 0x0a) {
    if (!cutUnfinished) return { size, reason: 'unfinished last line' };
    const lastNewline = buffer.lastIndexOf(0x0a);
    if (lastNewline < 0 && size > length) throw new AuditSinkError(`${path}: the last line is longer than ${TAIL_BYTES} bytes; not an audit file?`);
    end = lastNewline + 1;
    await truncateFd(fd, size - length + end);
    log.warn({ path, bytes: length - end }, 'audit: unfinished last line removed (the previous process stopped mid-write)');
  }
  const kept = size - length + end;
  if (end === 0) return kept === 0 ? { size: kept, reason: 'new chain: new file' } : { size: kept, reason: 'new chain: last line unreadable' };
  const start = buffer.lastIndexOf(0x0a, end - 2) + 1;
  if (start === 0 && size > length) return { size: kept, reason: 'new chain: last line unreadable' };
  const line = buffer.subarray(start, end - 1);
  const position = chainPosition(line.toString('utf8'));
  if (!position) return { size: kept, reason: 'new chain: the last line is not a chained audit record' };
  return { size: kept, chain: { id: position.chain, seq: position.seq, prev: lineHash(line) }, reason: '' };
}

/** What `audit.destination.file` may contain to give each worker a file of its own. */
export const WORKER_PLACEHOLDER = '{worker}';

/** The file a worker writes: `{worker}` becomes its slot (1 for a lone broker), so a restarted worker reopens its own file. */
export function auditFilePath(file: string, worker: number | undefined): string {
  return file.replaceAll(WORKER_PLACEHOLDER, String(worker ?? 1));
}

/**
 * The sink `audit` configures; a relative file path resolves against the config's directory. `worker`:
 * the slot of a `tessera serve --workers N` worker, which names its chains and fills in `{worker}`.
 */
export function openAuditSink(config: BrokerConfig['audit'], baseDir: string, log: Logger, worker?: number): Promise<ChainedAuditSink> {
  const target: AuditTarget =
    config.destination === 'stdout'
      ? { fd: 1, name: 'stdout' }
      : config.destination === 'stderr'
        ? { fd: 2, name: 'stderr' }
        : { path: resolvePath(baseDir, auditFilePath(config.destination.file, worker)) };
  return ChainedAuditSink.open(target, { fsync: config.fsync, fsyncIntervalMs: config.fsyncIntervalMs, maxPendingRecords: config.maxPendingRecords, writeTimeoutMs: config.writeTimeoutMs, log, worker });
}
