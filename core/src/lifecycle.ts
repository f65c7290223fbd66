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
 * process at once. SIGHUP, which would kill the process by default, is logged and ignored.
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
    process.on('SIGHUP', () => log.warn({ signal: 'SIGHUP' }, 'SIGHUP ignored: config reload is not supported yet, restart to apply a changed config'));
  });
}

/**
 * Drains and closes the broker; resolves with the exit status: 0 when every request in flight was
 * answered, 1 when the drain timed out and connections were cut.
 */
export async function shutDown(broker: Broker, signal: StopSignal, log: Logger): Promise<number> {
  log.info({ signal, drainTimeoutMs: broker.config.lifecycle.drainTimeoutMs }, 'shutdown: signal received, not ready, draining');
  const outcome = await broker.drain();
  await broker.close();
  log.info({ plugins: broker.plugins.length }, 'shutdown: broker closed (plugins stopped, audit flushed)');
  const status = outcome.timedOut ? 1 : 0;
  log.info({ status, completed: outcome.completed, cut: outcome.cut, elapsedMs: outcome.elapsedMs }, 'shutdown: exiting');
  return status;
}
