import { resolve } from 'node:path';
import { pino } from 'pino';
import type { BrokerConfig } from '../config/schema.js';

export interface AuditIdentity {
  readonly issuer: string;
  readonly subject: string;
  readonly tokenType: string;
}

/** One record per token decision, refusals included. Holds identifiers, never token contents. */
export interface AuditRecord {
  readonly event: 'token';
  /** Front door the request came through (`token` = the OAuth token endpoint). */
  readonly endpoint: 'token' | 'json-exchange' | 'spiffe-exchange';
  readonly decision: 'allow' | 'deny';
  readonly requestId: string;
  readonly grantType?: string;
  /** OAuth error code sent to the client on denial. */
  readonly error?: string;
  /** Internal reason (rule class, claim name, plugin fault): never sent to the client. */
  readonly reason?: string;
  readonly client?: { readonly id: string; readonly authMethod: string };
  readonly subject?: AuditIdentity;
  readonly actor?: AuditIdentity;
  readonly requested?: {
    readonly tokenType?: string;
    readonly audiences: readonly string[];
    readonly resources: readonly string[];
    readonly scopes?: readonly string[];
  };
  readonly ruleId?: string;
  readonly issued?: {
    readonly jti?: string;
    /** Who the issued token names, when the issuer chose it (a JWT-SVID's SPIFFE ID). */
    readonly subject?: string;
    readonly tokenType: string;
    readonly expiresIn: number;
    readonly audiences: readonly string[];
    readonly scopes: readonly string[];
  };
  readonly latencyMs: number;
}

export interface AuditSink {
  record(record: AuditRecord): void;
}

/** Writes audit records as JSON lines through pino, to stdout, stderr or a file. */
export class PinoAuditSink implements AuditSink {
  readonly #log: pino.Logger;
  readonly #destination: pino.DestinationStream & { flushSync?: () => void; end?: () => void };

  constructor(destination: BrokerConfig['audit']['destination'], baseDir: string) {
    this.#destination =
      destination === 'stdout'
        ? pino.destination(1)
        : destination === 'stderr'
          ? pino.destination(2)
          : pino.destination({ dest: resolve(baseDir, destination.file), mkdir: true, sync: true });
    this.#log = pino({ base: { log: 'audit' }, timestamp: pino.stdTimeFunctions.isoTime, messageKey: 'msg' }, this.#destination);
  }

  record(record: AuditRecord): void {
    this.#log.info(record);
  }

  close(): void {
    this.#destination.flushSync?.();
  }
}

/** Keeps records in memory (tests, benchmarks, embedding hosts). */
export class MemoryAuditSink implements AuditSink {
  readonly records: AuditRecord[] = [];
  record(record: AuditRecord): void {
    this.records.push(record);
  }
}
