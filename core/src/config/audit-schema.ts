import { z } from 'zod';

export const AUDIT_DEFAULTS = {
  destination: 'stdout',
  fsync: 'never',
  fsyncIntervalMs: 1_000,
  maxPendingRecords: 10_000,
  writeTimeoutMs: 2_000,
  closeTimeoutMs: 5_000,
} as const;

export const auditConfigSchema = z
  .object({
    destination: z
      .union([z.enum(['stdout', 'stderr']), z.object({ file: z.string().min(1) }).strict()])
      .default(AUDIT_DEFAULTS.destination)
      .describe('stdout, stderr, or { file: path }; {worker} in the path becomes the worker slot with serve --workers N (required above 1 worker)'),
    fsync: z
      .enum(['never', 'always', 'interval'])
      .default(AUDIT_DEFAULTS.fsync)
      .describe('File sink: never (the kernel writes back), always (a record counts as stored once fsync returned), interval (fsync every fsyncIntervalMs)'),
    fsyncIntervalMs: z.number().int().min(10).max(60_000).default(AUDIT_DEFAULTS.fsyncIntervalMs).describe('With fsync: interval, how often the file is synced'),
    maxPendingRecords: z
      .number()
      .int()
      .min(1)
      .max(1_000_000)
      .default(AUDIT_DEFAULTS.maxPendingRecords)
      .describe('Records that may wait for the write in flight; past it requests are refused with 503'),
    writeTimeoutMs: z
      .number()
      .int()
      .min(10)
      .max(60_000)
      .default(AUDIT_DEFAULTS.writeTimeoutMs)
      .describe('A write (and its fsync) not done by then fails its requests with 503 and marks the sink broken until a write completes'),
    closeTimeoutMs: z
      .number()
      .int()
      .min(0)
      .max(60_000)
      .default(AUDIT_DEFAULTS.closeTimeoutMs)
      .describe('At shutdown, how long the sink may take to finish its writes before tessera serve exits 1'),
  })
  .strict()
  .default(AUDIT_DEFAULTS);
