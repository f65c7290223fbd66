import {
  CLIENT_ASSERTION_TYPE_JWT_BEARER,
  InvalidClient,
  InvalidRequest,
  OAuthError,
  ServerError,
  type AuthenticatedClient,
  type Clock,
  type Logger,
} from '@tessera/plugin-sdk';
import type { AdminAuditRecord } from '../audit/admin-audit.js';
import { recordOrRefuse, type AuditSink } from '../audit/audit-log.js';
import { ConfigError } from '../config/errors.js';
import type { BrokerConfig } from '../config/schema.js';
import type { ClientAuthenticator } from '../oauth/client-auth.js';
import { tokenRequestFrom } from '../oauth/request.js';
import { KILL_SWITCH_KINDS, KillSwitchQuery, killSwitchTargetProblem, MAX_KILL_SWITCH_SECONDS, type KillSwitch, type KillSwitchEntry, type KillSwitchKind, type KillSwitchTarget } from './kill-switch.js';

export type AdminAction = AdminAuditRecord['action'];

/** What the HTTP layer read: the `Authorization` header and, per action, the JSON body or the query. */
export interface AdminRequest {
  readonly authorization: string | undefined;
  /** create: the entry; delete: the target. */
  readonly fields?: Readonly<Record<string, unknown>>;
}

export interface AdminRevocationsDeps {
  readonly authenticator: ClientAuthenticator;
  readonly killSwitch: KillSwitch;
  readonly audit: AuditSink;
  readonly clock: Clock;
  readonly log: Logger;
  /** `admin.clients`: private_key_jwt clients allowed to manage entries. */
  readonly clients: readonly string[];
  /** `{issuer}/admin/revocations`: with the issuer, the only `aud` an admin assertion may carry. */
  readonly endpointUrl: string;
}

/** An entry as the admin API and `tessera revocations list --json` show it. */
export function entryJson(entry: KillSwitchEntry): Record<string, string> {
  return {
    kind: entry.kind,
    value: entry.value,
    ...(entry.issuer !== undefined ? { issuer: entry.issuer } : {}),
    expiresAt: entry.expiresAt.toISOString(),
    createdAt: entry.createdAt.toISOString(),
    ...(entry.reason !== undefined ? { reason: entry.reason } : {}),
    ...(entry.createdBy !== undefined ? { createdBy: entry.createdBy } : {}),
  };
}

/** Every admin client must prove a key: a shared secret or a public client would put the kill switch one leak away. */
export function checkAdminClients(config: BrokerConfig, authenticator: ClientAuthenticator): void {
  const problems = config.admin.clients.flatMap((id, index) =>
    authenticator.clientConfig(id)?.auth.method === 'private_key_jwt' ? [] : [`admin.clients[${index}]: "${id}" is not a configured private_key_jwt client`],
  );
  if (problems.length > 0) throw new ConfigError(problems);
}

interface AdminTrace {
  client?: AuthenticatedClient;
  entry?: AdminAuditRecord['entry'];
  found?: boolean;
  count?: number;
  /** `recorded`: the change is on record and about to be made; `unrecorded`: its record could not be written. */
  audit?: 'recorded' | 'unrecorded';
}

/**
 * The kill-switch admin API without HTTP. Each request is authenticated by a fresh RFC 7523 client
 * assertion of an `admin.clients` client (single use, like at the token endpoint, and addressed to this
 * API or the issuer, never the token endpoint), then audited, refusals included. Nothing here is
 * reachable without that assertion, nor by an admin client that is itself kill-switched.
 *
 * A change (create, delete) is recorded before it is made: if the record cannot be written nothing
 * changes and the answer is 503, so no change is ever off the record. If the change then fails, a
 * follow-up record with `outcome: failed` says so. Reads are recorded after, with what they found.
 */
export class AdminRevocationsEndpoint {
  readonly #clients: ReadonlySet<string>;

  constructor(private readonly deps: AdminRevocationsDeps) {
    this.#clients = new Set(deps.clients);
  }

  async handle(action: AdminAction, readRequest: () => Promise<AdminRequest>, requestId: string): Promise<object> {
    const started = performance.now();
    const trace: AdminTrace = {};
    let answer: object;
    try {
      const request = await readRequest();
      trace.client = await this.#authenticate(request.authorization);
      await this.#refuseRevoked(trace.client);
      answer = await this.#act(action, request, trace, async () => {
        try {
          await this.#record(action, requestId, started, trace);
        } catch (error) {
          trace.audit = 'unrecorded';
          throw error;
        }
        trace.audit = 'recorded';
      });
    } catch (caught) {
      const error = caught instanceof OAuthError ? caught : this.#fault(caught);
      if (trace.audit === 'recorded') await this.#recordFailure(action, requestId, started, trace, error);
      else if (trace.audit !== 'unrecorded') await this.#record(action, requestId, started, trace, error);
      throw error;
    }
    if (trace.audit !== 'recorded') await this.#record(action, requestId, started, trace);
    return answer;
  }

  async #authenticate(authorization: string | undefined): Promise<AuthenticatedClient> {
    const assertion = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/.exec(authorization?.trim() ?? '')?.[1];
    if (assertion === undefined) throw new InvalidClient('client authentication required', { detail: 'admin: no client assertion' });
    const request = tokenRequestFrom(
      new Map([
        ['client_assertion_type', [CLIENT_ASSERTION_TYPE_JWT_BEARER]],
        ['client_assertion', [assertion]],
      ]),
    );
    const client = await this.deps.authenticator.authenticate(request, { endpointUrl: this.deps.endpointUrl });
    if (client.authMethod !== 'private_key_jwt' || !this.#clients.has(client.id)) throw new InvalidClient(undefined, { detail: 'admin: not an admin client' });
    return client;
  }

  /** A kill-switched admin client is locked out here too (only `tessera revocations delete` lifts its entry). */
  async #refuseRevoked(client: AuthenticatedClient): Promise<void> {
    // A store error stays a 503 (TemporarilyUnavailable): never read as "not revoked".
    const match = await this.deps.killSwitch.match(new KillSwitchQuery().client(client.id));
    if (match) throw new InvalidClient(undefined, { detail: `admin: kill switch: ${match.kind} entry` });
  }

  /** `recordIntent` writes the record of a change before it is made; it throws (503) when it cannot. */
  async #act(action: AdminAction, request: AdminRequest, trace: AdminTrace, recordIntent: () => Promise<void>): Promise<object> {
    const { killSwitch } = this.deps;
    switch (action) {
      case 'revocation.list': {
        const entries = await killSwitch.list();
        trace.count = entries.length;
        return { revocations: entries.map(entryJson) };
      }
      case 'revocation.create': {
        const fields = request.fields ?? {};
        const target = readTarget(fields);
        const expiresIn = fields.expiresInSeconds;
        if (typeof expiresIn !== 'number' || !Number.isInteger(expiresIn) || expiresIn < 1 || expiresIn > MAX_KILL_SWITCH_SECONDS) {
          throw invalidEntry(`expiresInSeconds must be an integer from 1 to ${MAX_KILL_SWITCH_SECONDS}`);
        }
        const reason = fields.reason;
        if (reason !== undefined && (typeof reason !== 'string' || reason.length > 256)) throw invalidEntry('reason must be a string of at most 256 characters');
        const expiresAt = new Date(this.deps.clock.now().getTime() + expiresIn * 1000);
        trace.entry = auditEntry({ ...target, expiresAt, ...(reason !== undefined ? { reason } : {}) });
        await recordIntent();
        const entry = await killSwitch.add(target, { expiresAt, ...(reason !== undefined ? { reason } : {}), createdBy: trace.client!.id });
        return { revocation: entryJson(entry) };
      }
      case 'revocation.delete': {
        const target = readTarget(request.fields ?? {});
        trace.entry = auditEntry(target);
        trace.found = await killSwitch.has(target);
        // Nothing to remove: a read, recorded after like a list.
        if (!trace.found) return { removed: false };
        await recordIntent();
        return { removed: await killSwitch.remove(target) };
      }
    }
  }

  /** The follow-up of a recorded change that failed; the caller gets the failure (503) even if this write fails too. */
  async #recordFailure(action: AdminAction, requestId: string, started: number, trace: AdminTrace, error: OAuthError): Promise<void> {
    try {
      await this.#record(action, requestId, started, trace, error, 'failed');
    } catch {
      this.deps.log.error({ requestId, action }, 'admin change failed after its record was written; the follow-up record (outcome failed) was not stored');
    }
  }

  #fault(error: unknown): OAuthError {
    this.deps.log.error({ err: error }, 'admin endpoint fault');
    return new ServerError(undefined, { detail: 'unexpected error' });
  }

  async #record(action: AdminAction, requestId: string, started: number, trace: AdminTrace, error?: OAuthError, outcome?: 'failed'): Promise<void> {
    await recordOrRefuse(this.deps.audit, {
      event: 'admin',
      action,
      via: 'http',
      decision: error ? 'deny' : 'allow',
      requestId,
      ...(error ? { error: error.code, ...(error.detail ? { reason: error.detail } : {}) } : {}),
      ...(trace.client ? { client: { id: trace.client.id, authMethod: trace.client.authMethod } } : {}),
      ...(trace.entry ? { entry: trace.entry } : {}),
      ...(trace.found !== undefined ? { found: trace.found } : {}),
      ...(trace.count !== undefined ? { count: trace.count } : {}),
      ...(outcome ? { outcome } : {}),
      latencyMs: Math.round((performance.now() - started) * 100) / 100,
    }, this.deps.log);
  }
}

/** The audit view of an entry or target. */
export function auditEntry(entry: KillSwitchTarget & { expiresAt?: Date; reason?: string }): NonNullable<AdminAuditRecord['entry']> {
  return {
    kind: entry.kind,
    value: entry.value,
    ...(entry.issuer !== undefined ? { issuer: entry.issuer } : {}),
    ...(entry.expiresAt ? { expiresAt: entry.expiresAt.toISOString() } : {}),
    ...(entry.reason !== undefined ? { reason: entry.reason } : {}),
  };
}

function readTarget(fields: Readonly<Record<string, unknown>>): KillSwitchTarget {
  const { kind, value, issuer } = fields;
  if (typeof kind !== 'string' || !(KILL_SWITCH_KINDS as readonly string[]).includes(kind)) throw invalidEntry(`kind must be one of ${KILL_SWITCH_KINDS.join(', ')}`);
  if (typeof value !== 'string') throw invalidEntry('value must be a string');
  if (issuer !== undefined && typeof issuer !== 'string') throw invalidEntry('issuer must be a string');
  const target: KillSwitchTarget = { kind: kind as KillSwitchKind, value, ...(issuer !== undefined ? { issuer } : {}) };
  const problem = killSwitchTargetProblem(target);
  if (problem) throw invalidEntry(problem);
  return target;
}

function invalidEntry(problem: string): InvalidRequest {
  return new InvalidRequest('the revocation entry is invalid', { detail: `admin: ${problem}` });
}
