import { TemporarilyUnavailable, type Logger } from '@tessera/plugin-sdk';
import type { AdminAuditRecord } from './admin-audit.js';

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
  /** The caller's `X-Request-Id` if acceptable, else the trace id when tracing is on, else a UUID (http/request-id.ts). */
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

/** Anything an audit sink receives: token decisions, revocations, introspections and kill-switch actions. */
export type AuditEntry = AuditRecord | RevocationAuditRecord | IntrospectionAuditRecord | AdminAuditRecord;

/**
 * Where audit records go. `record` resolves only once the record is stored (for the file and stdout
 * sinks: the write returned, and was synced when `audit.fsync` says so) and rejects with an
 * `AuditSinkError` otherwise. Endpoints await it before answering, so a token is never handed out
 * without its record.
 */
export interface AuditSink {
  record(entry: AuditEntry): Promise<void>;
}

/** Why a record could not be stored. `reason` is operator-facing (no record contents). */
export class AuditSinkError extends Error {
  constructor(readonly reason: string) {
    super(`audit sink: ${reason}`);
    this.name = 'AuditSinkError';
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
  /** Kill-switch actions. */
  readonly admin: AdminAuditRecord[] = [];
  async record(record: AuditEntry): Promise<void> {
    if (record.event === 'revoke') this.revocations.push(record);
    else if (record.event === 'introspect') this.introspections.push(record);
    else if (record.event === 'admin') this.admin.push(record);
    else this.records.push(record);
  }
}

/**
 * Stores `entry` or refuses the request: no answer leaves without its record, so a broken, full or
 * stalled sink turns every request into a 503 the client can retry, never a token nobody audited.
 */
export async function recordOrRefuse(audit: AuditSink, entry: AuditEntry, log: Logger): Promise<void> {
  try {
    await audit.record(entry);
  } catch (error) {
    const reason = error instanceof AuditSinkError ? error.reason : 'sink fault';
    log.warn({ requestId: entry.requestId, event: entry.event, decision: entry.decision, reason, ...(error instanceof AuditSinkError ? {} : { err: error }) }, 'request refused: its audit record was not stored');
    throw new TemporarilyUnavailable(undefined, { detail: `audit: ${reason}` });
  }
}
