import { execFileSync } from 'node:child_process';
import { closeSync, constants, createReadStream, openSync, readSync } from 'node:fs';
import { appendFile, mkdtemp, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { TemporarilyUnavailable } from '@tessera/plugin-sdk';
import { AuditSinkError, recordOrRefuse, type AuditRecord } from '../src/audit/audit-log.js';
import { GENESIS } from '../src/audit/chain.js';
import { ChainedAuditSink, type AuditTarget, type ChainedSinkOptions } from '../src/audit/chained-sink.js';
import { verifyAuditFiles } from '../src/audit/verify.js';

/** A logger whose lines the test reads. */
function capturingLog() {
  const lines: { msg: string; [key: string]: unknown }[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as { msg: string }) });
  return { log, lines };
}

const sinks: ChainedAuditSink[] = [];
afterEach(async () => {
  for (const sink of sinks.splice(0)) await sink.close(100);
});

async function open(target: AuditTarget, options: Partial<ChainedSinkOptions> = {}) {
  const { log, lines } = capturingLog();
  const sink = await ChainedAuditSink.open(target, { fsync: 'never', fsyncIntervalMs: 1_000, maxPendingRecords: 10_000, writeTimeoutMs: 2_000, log, ...options });
  sinks.push(sink);
  return { sink, lines };
}

function entry(requestId: string, extra: Partial<AuditRecord> = {}): AuditRecord {
  return { event: 'token', endpoint: 'token', decision: 'allow', requestId, latencyMs: 1, ...extra };
}

async function records(path: string): Promise<Record<string, unknown>[]> {
  return (await readFile(path, 'utf8'))
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

const dir = () => mkdtemp(join(tmpdir(), 'tessera-audit-'));
const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

describe('ChainedAuditSink on a file', () => {
  it('writes concurrent records in a few batches, each resolving once written, chained from a new-chain record', async () => {
    const path = join(await dir(), 'logs', 'audit.jsonl');
    const { sink } = await open({ path });
    await Promise.all(Array.from({ length: 500 }, (_, index) => sink.record(entry(`r${index}`))));
    const written = await records(path);
    expect(written).toHaveLength(501);
    expect(written[0]).toMatchObject({ seq: 1, prev: GENESIS, event: 'chain', reason: 'new chain: new file', log: 'audit' });
    expect(written.slice(1).map((record) => record.requestId)).toEqual(Array.from({ length: 500 }, (_, index) => `r${index}`));
    expect(written.map((record) => record.seq)).toEqual(Array.from({ length: 501 }, (_, index) => index + 1));
    // Group commit: records arriving while a write is in flight share the next write.
    expect(sink.batches).toBeLessThanOrEqual(3);
    expect(await verifyAuditFiles([path])).toMatchObject({ records: 501, chains: 1 });
  });

  it('refuses records past maxPendingRecords at once, without losing the ones it took', async () => {
    const path = join(await dir(), 'audit.jsonl');
    const { sink } = await open({ path }, { maxPendingRecords: 5 });
    const outcomes = await Promise.allSettled(Array.from({ length: 20 }, (_, index) => sink.record(entry(`r${index}`))));
    const refused = outcomes.filter((outcome) => outcome.status === 'rejected');
    expect(refused).toHaveLength(15);
    expect((refused[0] as PromiseRejectedResult).reason).toEqual(new AuditSinkError('more than 5 records waiting'));
    expect((await records(path)).filter((record) => record.event === 'token')).toHaveLength(5);
    expect(sink.problem()).toBeUndefined();
  });

  it('continues the chain of an existing file, and cuts an unfinished last line left by a crash', async () => {
    const path = join(await dir(), 'audit.jsonl');
    const first = await open({ path });
    await first.sink.record(entry('before'));
    await first.sink.close(1_000);
    const partial = '{"seq":3,"prev":"abc","time":"2030-01-01T00:';
    await appendFile(path, partial);
    const second = await open({ path });
    await second.sink.record(entry('after'));
    expect(second.lines).toContainEqual(expect.objectContaining({ msg: 'audit: unfinished last line removed (the previous process stopped mid-write)', bytes: partial.length }));
    const written = await records(path);
    expect(written.map((record) => [record.seq, record.event, record.requestId])).toEqual([
      [1, 'chain', undefined],
      [2, 'token', 'before'],
      [3, 'token', 'after'],
    ]);
    expect(await verifyAuditFiles([path])).toMatchObject({ records: 3, chains: 1 });
  });

  it('follows a rename (logrotate create) and a delete without a signal, the chain running on across the files', async () => {
    const path = join(await dir(), 'audit.jsonl');
    const { sink, lines } = await open({ path });
    await sink.record(entry('one'));
    await rename(path, `${path}.1`);
    await writeFile(path, '');
    await sleep(1_100);
    await sink.record(entry('two'));
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'audit: file reopened', reason: 'another file is at the path (rotated)' }));
    expect((await records(path)).map((record) => [record.seq, record.requestId])).toEqual([[3, 'two']]);
    expect(await verifyAuditFiles([`${path}.1`, path])).toMatchObject({ records: 3, files: 2, chains: 1 });
    await unlink(path);
    await sleep(1_100);
    await sink.record(entry('three'));
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'audit: file reopened', reason: 'the file was moved or deleted' }));
    expect((await records(path)).map((record) => [record.seq, record.requestId])).toEqual([[4, 'three']]);
    // The deleted file held seq 3: the gap is reported where it shows.
    expect((await verifyAuditFiles([`${path}.1`, path])).broken).toEqual({ file: path, line: 1, reason: `seq 4 does not follow seq 2 (${path}.1:2): a record is missing, repeated or out of order` });
  });

  it('reopens at once when asked (SIGHUP); verify checks the files in the order given', async () => {
    const path = join(await dir(), 'audit.jsonl');
    const { sink } = await open({ path }, { fsync: 'always' });
    await sink.record(entry('one'));
    await rename(path, `${path}.1`);
    await sink.reopen();
    await sink.record(entry('two'));
    await rename(path, `${path}.2`);
    await sink.reopen();
    await sink.record(entry('three'));
    expect((await records(path)).map((record) => record.requestId)).toEqual(['three']);
    expect(await verifyAuditFiles([`${path}.1`, `${path}.2`, path])).toMatchObject({ records: 4, files: 3, chains: 1 });
    // Out of order: the chain's first record turns up after a later one.
    expect((await verifyAuditFiles([`${path}.2`, `${path}.1`, path])).broken).toMatchObject({ file: `${path}.1`, line: 1, reason: expect.stringContaining(`begins again (already seen up to ${path}.2:1)`) });
  });

  it('syncs in the background with fsync: interval', async () => {
    const path = join(await dir(), 'audit.jsonl');
    const { sink, lines } = await open({ path }, { fsync: 'interval', fsyncIntervalMs: 20 });
    await sink.record(entry('one'));
    await sleep(60);
    await sink.record(entry('two'));
    expect(lines.filter((line) => line.msg === 'audit: fsync failed')).toEqual([]);
    expect(await verifyAuditFiles([path])).toMatchObject({ records: 3 });
  });

  it('fails with ENOSPC on a full disk (/dev/full), is not ready, and says so once', async () => {
    const { sink, lines } = await open({ path: '/dev/full' });
    await expect(sink.record(entry('full'))).rejects.toEqual(new AuditSinkError('write failed: ENOSPC'));
    expect(sink.problem()).toBe('write failed: ENOSPC');
    await expect(sink.record(entry('again'))).rejects.toThrow(AuditSinkError);
    expect(lines.filter((line) => line.msg.startsWith('audit: sink broken'))).toHaveLength(1);
  });
});

describe('ChainedAuditSink on a pipe', () => {
  it('refuses with EPIPE once the reader is gone, without ending the process', async () => {
    const fifo = join(await dir(), 'pipe');
    execFileSync('mkfifo', [fifo]);
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const writer = openSync(fifo, constants.O_WRONLY);
    const { sink } = await open({ fd: writer, name: 'pipe' });
    await sink.record(entry('read'));
    const buffer = Buffer.alloc(65_536);
    const text = buffer.subarray(0, readSync(reader, buffer)).toString('utf8');
    expect(text.trim().split('\n').map((line) => (JSON.parse(line) as { seq: number }).seq)).toEqual([1, 2]);
    closeSync(reader);
    await expect(sink.record(entry('nobody reads'))).rejects.toEqual(new AuditSinkError('write failed: EPIPE'));
    expect(sink.problem()).toBe('write failed: EPIPE');
    closeSync(writer);
  });

  it('bounds a write to a stalled reader, refuses meanwhile, and voids the late lines once they flow', async () => {
    const fifo = join(await dir(), 'pipe');
    execFileSync('mkfifo', [fifo]);
    // Opened read-write by the sink: a reader exists (so no EPIPE) but never reads, like a paused consumer.
    const { sink, lines } = await open({ path: fifo }, { writeTimeoutMs: 200 });
    await sink.record(entry('small'));
    const big = entry('big', { reason: 'x'.repeat(100_000) });
    const started = Date.now();
    await expect(sink.record(big)).rejects.toEqual(new AuditSinkError('write not completed within 200 ms'));
    expect(Date.now() - started).toBeLessThan(1_500);
    expect(sink.problem()).toBe('write not completed within 200 ms');
    await expect(sink.record(entry('meanwhile'))).rejects.toThrow('write not completed within 200 ms');
    await expect(sink.close(100)).resolves.toBe(false);
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'audit: the sink did not finish writing in time at shutdown' }));

    // The reader resumes: the stuck bytes go out, then a recovery record voids them.
    const stream = createReadStream(fifo);
    let received = '';
    stream.on('data', (chunk) => (received += chunk.toString()));
    const deadline = Date.now() + 5_000;
    while (!received.includes('"outcome":"recovered"') && Date.now() < deadline) await sleep(20);
    stream.destroy();
    const chain = received.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(chain.map((record) => [record.seq, record.requestId ?? record.event])).toEqual([
      [1, 'chain'],
      [2, 'small'],
      [3, 'big'],
      [4, 'sink'],
    ]);
    expect(chain[3]).toMatchObject({ outcome: 'recovered', reason: 'write not completed within 200 ms', voided: { fromSeq: 3, toSeq: 3 } });
  });
});

describe('ChainedAuditSink shared with another writer', () => {
  it('goes on from a record another process appended in between, so the chain does not fork', async () => {
    const path = join(await dir(), 'audit.jsonl');
    const serve = await open({ path });
    await serve.sink.record(entry('served'));
    const cli = await open({ path });
    await cli.sink.record(entry('cli'));
    await cli.sink.close(1_000);
    await serve.sink.record(entry('served again'));
    expect((await records(path)).map((record) => [record.seq, record.requestId ?? record.event])).toEqual([
      [1, 'chain'],
      [2, 'served'],
      [3, 'cli'],
      [4, 'served again'],
    ]);
    expect(await verifyAuditFiles([path])).toMatchObject({ records: 4, chains: 1 });
  });
});

describe('recordOrRefuse', () => {
  it('turns a sink failure into 503 temporarily_unavailable with Retry-After, and logs the reason, never the record', async () => {
    const { log, lines } = capturingLog();
    const failing = { record: () => Promise.reject(new AuditSinkError('write failed: EPIPE')) };
    const refusal = await recordOrRefuse(failing, entry('r1', { issued: { jti: 'secret-jti', tokenType: 'urn:x', expiresIn: 60, audiences: [], scopes: [] } }), log).catch((error: unknown) => error);
    expect(refusal).toBeInstanceOf(TemporarilyUnavailable);
    expect(refusal).toMatchObject({ status: 503, code: 'temporarily_unavailable', headers: { 'Retry-After': '5' }, detail: 'audit: write failed: EPIPE' });
    expect(lines).toEqual([expect.objectContaining({ msg: 'request refused: its audit record was not stored', requestId: 'r1', decision: 'allow', reason: 'write failed: EPIPE' })]);
    expect(JSON.stringify(lines)).not.toContain('secret-jti');
  });
});
