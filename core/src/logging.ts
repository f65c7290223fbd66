import { pino } from 'pino';
import type { Logger } from '@tessera/plugin-sdk';

/** Application logs go to stderr; stdout is left to the audit trail by default. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'tessera' }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination(2));
}

export const silentLogger: Logger = pino({ level: 'silent' });
