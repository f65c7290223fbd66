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
  /** The current actor (delegation). */
  readonly actor?: AuditIdentity;
  /** The whole delegation chain of the token (to be) issued, current actor first. */
  readonly actorChain?: readonly { readonly sub: string; readonly iss?: string; readonly spiffe_id?: string }[];
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

/** One record per RFC 7009 revocation request, refusals included. Never the token itself. */
export interface RevocationAuditRecord {
  readonly event: 'revoke';
  readonly decision: 'allow' | 'deny';
  readonly requestId: string;
  /** OAuth error code sent to the client on denial. */
  readonly error?: string;
  /** Internal reason (why a token was left alone, why the request was refused): never sent to the client. */
  readonly reason?: string;
  readonly client?: { readonly id: string; readonly authMethod: string };
  /** `revoked`: a live token of this broker was revoked; `ignored`: answered 200 without revoking anything (RFC 7009 §2.2). */
  readonly outcome?: 'revoked' | 'ignored';
  /** `jti` of the broker token the request named, once its signature verified. */
  readonly jti?: string;
  /** `token_type_hint`, when it is one of the registered values. */
  readonly tokenTypeHint?: string;
  readonly latencyMs: number;
}

/** One record per RFC 7662 introspection request, refusals included. Never the token itself. */
export interface IntrospectionAuditRecord {
  readonly event: 'introspect';
  /** `allow`: answered 200 (active or not); `deny`: refused with an error. */
  readonly decision: 'allow' | 'deny';
  readonly requestId: string;
  /** OAuth error code sent to the client on denial. */
  readonly error?: string;
  /** Internal reason (why the token is inactive, why the request was refused): never sent to the client. */
  readonly reason?: string;
  readonly client?: { readonly id: string; readonly authMethod: string };
  /** The `active` member of the answer. */
  readonly active?: boolean;
  /** `jti` of the broker token the request named, once its signature verified. */
  readonly jti?: string;
  /** `token_type_hint`, when it is one of the registered values. */
  readonly tokenTypeHint?: string;
  readonly latencyMs: number;
}

/** Anything an audit sink receives: token decisions, revocations and introspections. */
export type AuditEntry = AuditRecord | RevocationAuditRecord | IntrospectionAuditRecord;

export interface AuditSink {
  record(record: AuditEntry): void;
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

  record(record: AuditEntry): void {
    this.#log.info(record);
  }

  close(): void {
    this.#destination.flushSync?.();
  }
}

/** Keeps records in memory (tests, benchmarks, embedding hosts). */
export class MemoryAuditSink implements AuditSink {
  /** Token decisions. */
  readonly records: AuditRecord[] = [];
  /** Revocation requests, kept apart so `records` stays one shape. */
  readonly revocations: RevocationAuditRecord[] = [];
  /** Introspection requests, likewise apart. */
  readonly introspections: IntrospectionAuditRecord[] = [];
  record(record: AuditEntry): void {
    if (record.event === 'revoke') this.revocations.push(record);
    else if (record.event === 'introspect') this.introspections.push(record);
    else this.records.push(record);
  }
}
