import cluster, { type Worker } from 'node:cluster';
import type { Logger } from '@tessera/plugin-sdk';
import { WORKER_PLACEHOLDER } from '../audit/chained-sink.js';
import { ConfigError } from '../config/errors.js';
import type { BrokerConfig } from '../config/schema.js';
import { createLogger } from '../logging.js';
import { checkStoreForFleet } from '../state/open-store.js';

/** Most workers `--workers` accepts: beyond the core count they only add memory and Redis connections. */
export const MAX_WORKERS = 64;

/** A crashed worker is replaced after this, doubling per crash in a row up to the maximum. */
const RESTART_BACKOFF_MS = 500;
const RESTART_BACKOFF_MAX_MS = 30_000;
/** A worker that served this long before dying starts its slot's backoff afresh. */
const STABLE_AFTER_MS = 30_000;

/** How the primary tells a worker its slot (1…N): a replacement gets the slot, not the cluster id, of the one it replaces. */
const SLOT_ENV = 'TESSERA_WORKER_SLOT';

/** What a worker tells the primary. */
interface ListeningMessage {
  readonly tessera: 'listening';
  readonly url: string;
  readonly issuer: string;
}

function isListening(message: unknown): message is ListeningMessage {
  return typeof message === 'object' && message !== null && (message as { tessera?: unknown }).tessera === 'listening';
}

/** True in a process `tessera serve --workers N` forked: it runs one broker and reports to the primary. */
export function isServeWorker(): boolean {
  return cluster.isWorker;
}

/** The slot (1…N) of a `tessera serve --workers N` worker, else undefined: its audit file and chain ids carry it. */
export function workerSlot(): number | undefined {
  if (!cluster.isWorker) return undefined;
  const slot = Number(process.env[SLOT_ENV]);
  return Number.isSafeInteger(slot) && slot >= 1 ? slot : undefined;
}

/** The `listening` line: printed by a lone broker, reported to the primary by a worker (which prints one line for all). */
export function announceListening(url: string, issuer: string): void {
  if (cluster.isWorker) process.send?.({ tessera: 'listening', url, issuer } satisfies ListeningMessage);
  else process.stderr.write(`tessera listening on ${url} (issuer ${issuer})\n`);
}

/** After its drain a worker lets go of the primary's IPC channel, which would otherwise keep it alive; passes `status` through. */
export function leaveFleet(status: number): number {
  if (cluster.isWorker) cluster.worker!.disconnect();
  return status;
}

/** A worker's log lines name it, so a fleet's interleaved stderr can be told apart. */
export function workerLogger(level: string): Logger | undefined {
  return cluster.isWorker ? createLogger(level).child({ worker: cluster.worker!.id, slot: workerSlot(), pid: process.pid }) : undefined;
}

interface Slot {
  worker?: Worker;
  startedAt: number;
  crashes: number;
  restart?: NodeJS.Timeout;
  listening: boolean;
}

/**
 * The primary of `tessera serve --workers N`: forks N workers (node:cluster, which shares the listening
 * socket among them; each builds its own broker from the same files), prints one listening line once all
 * listen, forwards SIGTERM/SIGINT (each worker drains) and SIGHUP, and replaces a worker that dies
 * unexpectedly, with backoff. Resolves with the exit status: the worst of the workers'. A worker that dies
 * before the fleet first listened is a startup failure: the others are stopped and the status is 1.
 */
export async function superviseWorkers(config: BrokerConfig, count: number): Promise<number> {
  checkStoreForFleet(config, count);
  // Each worker hash-chains its own records. On stdout/stderr each line is one write and carries its chain
  // id, so the chains interleave and still verify; N processes appending to one file could interleave
  // partial lines (a write is not atomic past PIPE_BUF), so each worker needs a file of its own.
  if (typeof config.audit.destination === 'object' && !config.audit.destination.file.includes(WORKER_PLACEHOLDER)) {
    throw new ConfigError([
      `audit.destination.file: ${count} workers cannot share one hash-chained audit file: put ${WORKER_PLACEHOLDER} in the path for a file per worker (e.g. audit-${WORKER_PLACEHOLDER}.jsonl), or use stdout or stderr`,
    ]);
  }
  const log = createLogger(config.log.level).child({ role: 'primary', pid: process.pid });
  const slots: Slot[] = Array.from({ length: count }, () => ({ startedAt: 0, crashes: 0, listening: false }));
  let phase: 'starting' | 'serving' | 'stopping' = 'starting';
  let status = 0;
  let settle: (code: number) => void = () => undefined;
  const finished = new Promise<number>((done) => (settle = done));

  const live = () => slots.flatMap((slot) => (slot.worker && !slot.worker.isDead() ? [slot.worker] : []));
  const stop = (signal: NodeJS.Signals) => {
    phase = 'stopping';
    for (const slot of slots) clearTimeout(slot.restart);
    for (const worker of live()) worker.process.kill(signal);
    if (live().length === 0) settle(status);
  };

  const fork = (index: number) => {
    const slot = slots[index]!;
    slot.restart = undefined;
    slot.listening = false;
    slot.startedAt = Date.now();
    const worker = cluster.fork({ [SLOT_ENV]: String(index + 1) });
    slot.worker = worker;
    worker.on('message', (message: unknown) => {
      if (!isListening(message)) return;
      slot.listening = true;
      if (phase === 'starting' && index === 0) for (let next = 1; next < count; next++) fork(next);
      if (phase === 'starting' && slots.every((candidate) => candidate.listening)) {
        phase = 'serving';
        log.info({ workers: slots.map((candidate) => candidate.worker?.process.pid) }, 'workers: every worker listening');
        process.stderr.write(`tessera listening on ${message.url} (issuer ${message.issuer}, ${count} workers)\n`);
      } else if (phase === 'serving') {
        log.info({ slot: index + 1, worker: worker.id, workerPid: worker.process.pid }, 'workers: replacement worker listening');
      }
    });
    worker.once('exit', (code, signal) => {
      const workerStatus = code ?? 1;
      if (phase === 'stopping') {
        status = Math.max(status, workerStatus === 0 && signal === null ? 0 : Math.max(workerStatus, 1));
        log.info({ slot: index + 1, worker: worker.id, workerPid: worker.process.pid, code, signal }, 'workers: worker stopped');
        if (live().length === 0) settle(status);
        return;
      }
      if (phase === 'starting') {
        log.error({ slot: index + 1, worker: worker.id, workerPid: worker.process.pid, code, signal }, 'workers: a worker exited before the fleet was listening, stopping the others');
        status = 1;
        stop('SIGTERM');
        return;
      }
      if (Date.now() - slot.startedAt >= STABLE_AFTER_MS) slot.crashes = 0;
      const delayMs = Math.min(RESTART_BACKOFF_MAX_MS, RESTART_BACKOFF_MS * 2 ** slot.crashes);
      slot.crashes += 1;
      log.warn({ slot: index + 1, worker: worker.id, workerPid: worker.process.pid, code, signal, restartInMs: delayMs }, 'workers: worker exited unexpectedly, restarting it');
      slot.restart = setTimeout(() => fork(index), delayMs);
    });
  };

  let received: NodeJS.Signals | undefined;
  const onStop = (signal: NodeJS.Signals) => {
    if (received !== undefined) {
      log.warn({ signal, first: received }, 'shutdown: already draining, signal ignored (the drain ends by lifecycle.drainTimeoutMs)');
      return;
    }
    received = signal;
    log.info({ signal, workers: live().length }, 'workers: signal received, every worker drains');
    stop(signal);
  };
  const onHangUp = () => {
    log.info({ workers: live().length }, 'workers: SIGHUP forwarded to every worker');
    for (const worker of live()) worker.process.kill('SIGHUP');
  };
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  process.on('SIGHUP', onHangUp);

  // The first worker starts alone: what startup creates on disk (a development key) is made once, not raced.
  fork(0);
  const code = await finished;
  log.info({ status: code }, 'workers: every worker stopped, exiting');
  return code;
}
