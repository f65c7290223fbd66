import { appendFile, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../src/logging.js';
import { auditFilePath, ChainedAuditSink, openAuditSink, wholeLinePieces } from '../src/audit/chained-sink.js';
import { AUDIT_DEFAULTS } from '../src/config/audit-schema.js';
import { auditVerifyCommand, verifyAuditFiles } from '../src/audit/verify.js';

let path: string;
let lines: string[];

/** A real chain of 10 lines: the new-chain record and nine token decisions. */
beforeEach(async () => {
  path = join(await mkdtemp(join(tmpdir(), 'tessera-verify-')), 'audit.jsonl');
  const sink = await ChainedAuditSink.open({ path }, { fsync: 'never', fsyncIntervalMs: 1_000, maxPendingRecords: 100, writeTimeoutMs: 2_000, log: silentLogger });
  for (let index = 0; index < 9; index += 1) await sink.record({ event: 'token', endpoint: 'token', decision: index % 3 === 0 ? 'deny' : 'allow', requestId: `r${index}`, latencyMs: 1 });
  await sink.close(1_000);
  lines = (await readFile(path, 'utf8')).split('\n').slice(0, -1);
});

const save = (changed: string[], file = path) => writeFile(file, `${changed.join('\n')}\n`);

async function run(files: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await auditVerifyCommand(files, (text) => (out += text), (text) => (err += text));
  return { code, out, err };
}

describe('tessera audit verify', () => {
  it('passes an intact chain and prints a summary', async () => {
    expect(lines).toHaveLength(10);
    expect(await run([path])).toEqual({ code: 0, out: 'chain intact: 10 records in 1 file (1 new chain begun)\n', err: '' });
  });

  it('names the line a single changed byte is in', async () => {
    const changed = [...lines];
    changed[4] = changed[4]!.replace('"requestId":"r3"', '"requestId":"r4"');
    expect(changed[4]).not.toBe(lines[4]);
    await save(changed);
    expect(await run([path])).toEqual({ code: 1, out: '', err: `${path}:5: changed: its hash is not the prev of the next record\n` });
  });

  it('names the line whose prev was changed', async () => {
    const changed = [...lines];
    changed[6] = changed[6]!.replace(/"prev":"(.)/, (_, first: string) => `"prev":"${first === 'A' ? 'B' : 'A'}`);
    await save(changed);
    expect((await verifyAuditFiles([path])).broken).toEqual({ file: path, line: 7, reason: 'changed: its prev is not the hash of the record before' });
  });

  it('reports a removed record where the gap shows, and a line that is not JSON', async () => {
    await save(lines.filter((_, index) => index !== 3));
    expect((await verifyAuditFiles([path])).broken).toMatchObject({ file: path, line: 4, reason: expect.stringContaining('seq 5 does not follow seq 3') });
    const garbled = [...lines];
    garbled[2] = garbled[2]!.slice(0, -1);
    await save(garbled);
    expect((await verifyAuditFiles([path])).broken).toEqual({ file: path, line: 3, reason: 'not JSON' });
  });

  it('follows the chain across rotated files given oldest first, and reports a break between them', async () => {
    const older = `${path}.1`;
    await save(lines.slice(0, 6), older);
    await save(lines.slice(6));
    expect(await run([older, path])).toEqual({ code: 0, out: 'chain intact: 10 records in 2 files (1 new chain begun)\n', err: '' });
    await save(lines.slice(7));
    expect(await run([older, path])).toMatchObject({ code: 1, err: expect.stringMatching(new RegExp(`^${path}:1: seq 8 does not follow seq 6 \\(${older}:6\\)`)) });
  });

  it('leaves out an unfinished last line (a crash mid-write) and says so', async () => {
    await appendFile(path, '{"seq":11,"prev":"x');
    expect(await run([path])).toEqual({ code: 0, out: `chain intact: 10 records in 1 file (1 new chain begun, unfinished last line ${path}:11 left out)\n`, err: '' });
  });
});

/** Lines of a file-backed chain written by the sink of worker `worker`. */
async function workerChain(worker: number, count: number): Promise<string[]> {
  const file = join(await mkdtemp(join(tmpdir(), 'tessera-verify-')), `audit-${worker}.jsonl`);
  const sink = await ChainedAuditSink.open({ path: file }, { fsync: 'never', fsyncIntervalMs: 1_000, maxPendingRecords: 100, writeTimeoutMs: 2_000, log: silentLogger, worker });
  for (let index = 0; index < count; index += 1) await sink.record({ event: 'token', endpoint: 'token', decision: 'allow', requestId: `w${worker}-r${index}`, latencyMs: 1 });
  await sink.close(1_000);
  return (await readFile(file, 'utf8')).split('\n').slice(0, -1);
}

/** Two workers' chains as one stream shows them (`--workers 2` on one stdout), with a log line in between. */
function interleave(first: string[], second: string[]): string[] {
  const stream: string[] = [];
  for (let index = 0; index < Math.max(first.length, second.length); index += 1) {
    if (index < first.length) stream.push(first[index]!);
    if (index === 3) stream.push('{"level":30,"msg":"a log line"}');
    if (index < second.length) stream.push(second[index]!);
  }
  return stream;
}

describe('tessera audit verify with several chains in one stream', () => {
  let one: string[];
  let two: string[];
  let stream: string[];
  beforeEach(async () => {
    one = await workerChain(1, 6);
    two = await workerChain(2, 6);
    stream = interleave(one, two);
  });

  const chainOf = (line: string) => (JSON.parse(line) as { chain: string }).chain;
  const lineOf = (text: string) => stream.indexOf(text) + 1;

  it('gives every record its chain id, named after the worker that began the chain', () => {
    const id = chainOf(one[0]!);
    expect(id).toMatch(/^w1-[A-Za-z0-9_-]{12}$/);
    expect(chainOf(two[0]!)).toMatch(/^w2-/);
    expect(one.every((line) => chainOf(line) === id)).toBe(true);
    // The id comes right after seq and prev, before the record.
    expect(one[1]).toMatch(new RegExp(`^\\{"seq":2,"prev":"[A-Za-z0-9_-]{43}","chain":"${id}","time"`));
  });

  it('verifies each interleaved chain on its own', async () => {
    await save(stream);
    expect(await run([path])).toEqual({ code: 0, out: 'chain intact: 14 records in 1 file (2 new chains begun, 1 other lines skipped)\n', err: '' });
  });

  it('names the changed line of one chain, whatever the other chain does around it', async () => {
    const changed = [...stream];
    const target = lineOf(two[3]!);
    changed[target - 1] = changed[target - 1]!.replace('"requestId":"w2-r2"', '"requestId":"w2-r9"');
    await save(changed);
    expect(await run([path])).toEqual({ code: 1, out: '', err: `${path}:${target}: changed: its hash is not the prev of the next record\n` });
  });

  it('names the line of a chain whose prev was changed, and a record missing from one chain', async () => {
    const changed = [...stream];
    const target = lineOf(one[4]!);
    changed[target - 1] = changed[target - 1]!.replace(/"prev":"(.)/, (_, first: string) => `"prev":"${first === 'A' ? 'B' : 'A'}`);
    await save(changed);
    expect((await verifyAuditFiles([path])).broken).toEqual({ file: path, line: target, reason: 'changed: its prev is not the hash of the record before' });

    const missing = lineOf(two[2]!);
    await save(stream.filter((line) => line !== two[2]));
    // The next record of chain 2 shows the gap: one line earlier now that a line is gone.
    const after = lineOf(two[3]!) - 1;
    expect((await verifyAuditFiles([path])).broken).toEqual({
      file: path,
      line: after,
      reason: `seq 4 does not follow seq 2 (${path}:${lineOf(two[1]!)}): a record is missing, repeated or out of order`,
    });
    expect(after).toBeGreaterThan(missing);
  });

  it('reports a change to the last record of a chain that others go on after', async () => {
    const changed = [...stream];
    // The last record of chain 1 no longer links; chain 2 goes on after it, so no later record of chain 1 tells which side changed.
    const target = lineOf(one[6]!);
    expect(target).toBeLessThan(lineOf(two[6]!));
    changed[target - 1] = changed[target - 1]!.replace('"prev":"', '"prev":"x');
    await save(changed);
    expect((await verifyAuditFiles([path])).broken).toEqual({
      file: path,
      line: lineOf(one[5]!),
      reason: `changed, or the prev of ${path}:${target}: its hash is not the prev of the next record`,
    });
  });

  it('lists the chains that begin before the files, such as a capture that started late or a later rotated file', async () => {
    const late = stream.slice(lineOf(one[2]!) - 1);
    await save(late);
    const { code, out } = await run([path]);
    expect(code).toBe(0);
    expect(out).toBe(
      `chain intact: 10 records in 1 file (2 begun before these files: ${chainOf(one[0]!)} at ${path}:1 seq 3, ${chainOf(two[0]!)} at ${path}:2 seq 3, 1 other lines skipped)\n`,
    );
    expect((await verifyAuditFiles([path])).joined).toEqual([
      { chain: chainOf(one[0]!), file: path, line: 1, seq: 3 },
      { chain: chainOf(two[0]!), file: path, line: 2, seq: 3 },
    ]);
  });

  it('follows each chain through its own rotated files, in whatever order the chains are given', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-verify-'));
    const files = { oneOld: join(dir, 'audit-1.jsonl.1'), one: join(dir, 'audit-1.jsonl'), twoOld: join(dir, 'audit-2.jsonl.1'), two: join(dir, 'audit-2.jsonl') };
    await save(one.slice(0, 3), files.oneOld);
    await save(one.slice(3), files.one);
    await save(two.slice(0, 4), files.twoOld);
    await save(two.slice(4), files.two);
    expect(await verifyAuditFiles([files.oneOld, files.one, files.twoOld, files.two])).toMatchObject({ records: 14, chains: 2, joined: [] });
    expect(await verifyAuditFiles([files.twoOld, files.oneOld, files.two, files.one])).toMatchObject({ records: 14, chains: 2, joined: [] });
    // Within a chain the order still counts.
    expect((await verifyAuditFiles([files.one, files.oneOld])).broken).toMatchObject({ file: files.oneOld, line: 1, reason: expect.stringContaining('begins again') });
    expect((await verifyAuditFiles([files.twoOld, files.twoOld])).broken).toMatchObject({ file: files.twoOld, line: 1, reason: expect.stringContaining('begins again') });
  });
});

describe('a file per worker', () => {
  it('puts the worker slot for {worker}, 1 without workers', () => {
    expect(auditFilePath('/var/log/tessera/audit-{worker}.jsonl', 3)).toBe('/var/log/tessera/audit-3.jsonl');
    expect(auditFilePath('audit-{worker}.jsonl', undefined)).toBe('audit-1.jsonl');
    expect(auditFilePath('audit.jsonl', 2)).toBe('audit.jsonl');
  });

  it('a restarted worker reopens its own file and goes on with its chain', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-verify-'));
    const config = { ...AUDIT_DEFAULTS, destination: { file: 'audit-{worker}.jsonl' } };
    for (const run of [0, 1]) {
      const sink = await openAuditSink(config, dir, silentLogger, 2);
      await sink.record({ event: 'token', endpoint: 'token', decision: 'allow', requestId: `run${run}`, latencyMs: 1 });
      await sink.close(1_000);
    }
    const written = (await readFile(join(dir, 'audit-2.jsonl'), 'utf8')).split('\n').slice(0, -1).map((line) => JSON.parse(line) as { seq: number; chain: string; event: string });
    expect(written.map((record) => [record.seq, record.event])).toEqual([
      [1, 'chain'],
      [2, 'token'],
      [3, 'token'],
    ]);
    expect(new Set(written.map((record) => record.chain)).size).toBe(1);
    expect(written[0]!.chain).toMatch(/^w2-/);
    expect(await verifyAuditFiles([join(dir, 'audit-2.jsonl')])).toMatchObject({ records: 3, chains: 1, joined: [] });
  });

  it('cuts a batch for a shared pipe into whole lines that fit one atomic write', () => {
    const batch = Buffer.from(`${'a'.repeat(30)}\n${'b'.repeat(30)}\n${'c'.repeat(70)}\n${'d'.repeat(10)}\n`);
    const pieces = wholeLinePieces(batch, 64).map((piece) => piece.toString());
    expect(pieces).toEqual([`${'a'.repeat(30)}\n${'b'.repeat(30)}\n`, `${'c'.repeat(70)}\n`, `${'d'.repeat(10)}\n`]);
    expect(Buffer.concat(wholeLinePieces(batch, 64)).equals(batch)).toBe(true);
    expect(wholeLinePieces(batch, 1_000)).toHaveLength(1);
  });
});
