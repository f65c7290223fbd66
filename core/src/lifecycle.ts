import type { Logger } from '@tessera/plugin-sdk';
import type { Broker } from './broker.js';

const STOP_SIGNALS = ['SIGTERM', 'SIGINT'] as const;
export type StopSignal = (typeof STOP_SIGNALS)[number];

/**
 * Installs the process signal handlers of `tessera serve` and resolves with the first SIGTERM or SIGINT.
 *
 * A repeated stop signal is logged and otherwise ignored: the drain is already bounded by
 * `lifecycle.drainTimeoutMs`, and supervisors and shells that signal a whole process group often deliver
 * the same signal twice, which would cut exactly the requests the drain protects. SIGKILL still ends the
 * process at once. SIGHUP reloads instead (`reloadOnHangUp`).
 */
export function stopSignal(log: Logger): Promise<StopSignal> {
  return new Promise((resolve) => {
    let received: StopSignal | undefined;
    for (const signal of STOP_SIGNALS) {
      process.on(signal, () => {
        if (received !== undefined) {
          log.warn({ signal, first: received }, 'shutdown: already draining, signal ignored (the drain ends by lifecycle.drainTimeoutMs)');
          return;
        }
        received = signal;
        resolve(signal);
      });
    }
  });
}

/**
 * SIGHUP reloads the config (see `Broker.reload`); its outcome is logged there. Reloads queue, so a burst
 * of signals costs at most one reload after the running one.
 */
export function reloadOnHangUp(broker: Broker, log: Logger): void {
  process.on('SIGHUP', () => {
    log.info({ signal: 'SIGHUP' }, 'reload: SIGHUP received, reading the config again');
    broker.reload().catch((error: unknown) => log.error({ err: error instanceof Error ? error.message : String(error) }, 'reload failed'));
  });
}

/** SIGHUP reopens the audit file (after logrotate renamed it), whatever else SIGHUP does. */
export function reopenAuditOnHangUp(broker: Broker, log: Logger): void {
  process.on('SIGHUP', () => {
    broker.reopenAudit().catch((error: unknown) => log.error({ err: error }, 'audit: reopen failed'));
  });
}

/**
 * Drains and closes the broker; resolves with the exit status: 0 when every request in flight was
 * answered, 1 when the drain timed out and connections were cut or the audit sink could not finish writing.
 */
export async function shutDown(broker: Broker, signal: StopSignal, log: Logger): Promise<number> {
  log.info({ signal, drainTimeoutMs: broker.config.lifecycle.drainTimeoutMs }, 'shutdown: signal received, not ready, draining');
  const outcome = await broker.drain();
  let flushed = true;
  try {
    await broker.close();
    log.info({ plugins: broker.plugins.length }, 'shutdown: broker closed (plugins stopped, audit flushed)');
  } catch (error) {
    // A stuck audit sink must not hang the exit; the non-zero status tells the supervisor records may be lost.
    flushed = false;
    log.error({ err: error }, 'shutdown: broker closed, audit records not all written');
  }
  const status = outcome.timedOut || !flushed ? 1 : 0;
  log.info({ status, completed: outcome.completed, cut: outcome.cut, elapsedMs: outcome.elapsedMs }, 'shutdown: exiting');
  return status;
}
