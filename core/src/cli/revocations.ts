import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import type { AdminAuditRecord } from '../audit/admin-audit.js';
import { openAuditSink } from '../audit/chained-sink.js';
import { systemClock } from '../clock.js';
import { loadConfigFiles } from '../config/load.js';
import type { BrokerConfig } from '../config/schema.js';
import { createLogger } from '../logging.js';
import { KillSwitch, killSwitchTargetProblem, MAX_KILL_SWITCH_SECONDS, type KillSwitchTarget } from '../state/kill-switch.js';
import { auditEntry, entryJson } from '../state/kill-switch-admin.js';

/** A usage problem: the caller prints it with the command's usage and exits 2. */
export class RevocationUsageError extends Error {}

export const REVOKE_USAGE = `usage: tessera revoke --config PATH... TARGET --expires-in DURATION [--reason TEXT]

  TARGET is one of
    --subject S [--issuer I]   a subject (of issuer I only, or of any issuer)
    --client C                 a client id (or a workload client's SPIFFE ID)
    --issuer I                 every subject of a subject-token issuer
    --spiffe-prefix P          a SPIFFE ID and every ID below it (spiffe://td/ns covers spiffe://td/ns/x)
    --jti J                    one token this broker issued
  DURATION is a number with s, m, h or d (90s, 15m, 1h, 30d), at most 366d

  tessera revocations list --config PATH... [--json]
  tessera revocations delete --config PATH... TARGET
`;

/** A record that cannot be written within this fails the command instead of hanging it. */
const AUDIT_CLOSE_TIMEOUT_MS = 5_000;

const CONFIG = { config: { type: 'string', short: 'c', multiple: true } } as const;
const TARGET = {
  subject: { type: 'string' },
  client: { type: 'string' },
  issuer: { type: 'string' },
  'spiffe-prefix': { type: 'string' },
  jti: { type: 'string' },
} as const;

interface Output {
  out(text: string): void;
  err(text: string): void;
}

/** `tessera revoke`: adds a kill-switch entry straight to the shared store, so it works with every broker stopped too. */
export async function revokeCommand(args: string[], io: Output): Promise<number> {
  const { values } = parseArgs({ args, options: { ...CONFIG, ...TARGET, 'expires-in': { type: 'string' }, reason: { type: 'string' } } });
  const target = readTarget(values);
  if (values['expires-in'] === undefined) throw new RevocationUsageError('revoke needs --expires-in DURATION');
  const seconds = parseDuration(values['expires-in']);
  return withKillSwitch(values.config, io, 'revocation.create', async (killSwitch, audit) => {
    const expiresAt = new Date(systemClock.now().getTime() + seconds * 1000);
    const entry = await killSwitch.add(target, { expiresAt, ...(values.reason !== undefined ? { reason: values.reason } : {}), createdBy: 'cli' });
    audit.entry = auditEntry(entry);
    io.out(`revoked ${describe(target)} until ${entry.expiresAt.toISOString()}\n`);
    return 0;
  });
}

/** `tessera revocations list|delete`. */
export async function revocationsCommand(args: string[], io: Output): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'list') {
    const { values } = parseArgs({ args: rest, options: { ...CONFIG, json: { type: 'boolean' } } });
    return withKillSwitch(values.config, io, 'revocation.list', async (killSwitch, audit) => {
      const entries = await killSwitch.list();
      audit.count = entries.length;
      if (values.json) io.out(`${JSON.stringify(entries.map(entryJson), null, 2)}\n`);
      else if (entries.length === 0) io.out('no revocations\n');
      else for (const entry of entries) io.out(`${describe(entry)}  until ${entry.expiresAt.toISOString()}${entry.reason ? `  (${entry.reason})` : ''}\n`);
      return 0;
    });
  }
  if (sub === 'delete') {
    const { values } = parseArgs({ args: rest, options: { ...CONFIG, ...TARGET } });
    const target = readTarget(values);
    return withKillSwitch(values.config, io, 'revocation.delete', async (killSwitch, audit) => {
      audit.entry = auditEntry(target);
      audit.found = await killSwitch.remove(target);
      io.out(audit.found ? `removed ${describe(target)}\n` : `no revocation for ${describe(target)}\n`);
      return audit.found ? 0 : 1;
    });
  }
  throw new RevocationUsageError('revocations list | revocations delete');
}

type AuditFields = { entry?: AdminAuditRecord['entry']; found?: boolean; count?: number };

/**
 * Opens the store the config names and runs `act` on its kill switch. The record goes to this command's
 * standard error, through the same chained sink the broker uses: the broker's audit file has one writer
 * (its hash chain), and the entry itself keeps `createdBy: cli` and `createdAt` for every broker to show.
 */
async function withKillSwitch(
  paths: string[] | undefined,
  io: Output,
  action: AdminAuditRecord['action'],
  act: (killSwitch: KillSwitch, audit: AuditFields) => Promise<number>,
): Promise<number> {
  if (!paths || paths.length === 0) throw new RevocationUsageError(`${action === 'revocation.create' ? 'revoke' : 'revocations'} needs --config PATH`);
  const loaded = await loadConfigFiles(paths);
  const config: BrokerConfig = loaded.config;
  if (config.store.kind === 'memory') {
    io.err(
      'tessera: store.kind is memory: revocations live inside each broker process, so no other process can add or read them. ' +
        'Configure store.kind: redis (shared by every broker) to use the kill switch from the command line.\n',
    );
    return 1;
  }
  const log = createLogger('silent');
  const { RedisStateStore } = await import('../state/redis-store.js');
  const store = await RedisStateStore.open(config.store, log);
  const audit = await openAuditSink({ ...config.audit, destination: 'stderr' }, loaded.baseDir, log);
  const started = performance.now();
  const fields: AuditFields = {};
  let failure: string | undefined;
  try {
    return await act(new KillSwitch(store, systemClock), fields);
  } catch (error) {
    failure = error instanceof RangeError ? error.message : 'state store unavailable';
    io.err(`tessera: ${error instanceof RangeError ? error.message : 'the state store did not answer; nothing was changed'}\n`);
    return 1;
  } finally {
    await audit.record({
      event: 'admin',
      action,
      via: 'cli',
      decision: failure ? 'deny' : 'allow',
      requestId: randomUUID(),
      ...(failure ? { reason: failure } : {}),
      ...fields,
      latencyMs: Math.round((performance.now() - started) * 100) / 100,
    });
    await audit.close(AUDIT_CLOSE_TIMEOUT_MS);
    await store.close();
  }
}

function readTarget(values: { subject?: string; client?: string; issuer?: string; 'spiffe-prefix'?: string; jti?: string }): KillSwitchTarget {
  const named = (['subject', 'client', 'spiffe-prefix', 'jti'] as const).filter((kind) => values[kind] !== undefined);
  let target: KillSwitchTarget;
  if (named.length > 1) throw new RevocationUsageError('name one target: --subject, --client, --issuer, --spiffe-prefix or --jti');
  if (named.length === 0) {
    if (values.issuer === undefined) throw new RevocationUsageError('name a target: --subject, --client, --issuer, --spiffe-prefix or --jti');
    target = { kind: 'issuer', value: values.issuer };
  } else if (named[0] === 'subject') {
    target = { kind: 'subject', value: values.subject!, ...(values.issuer !== undefined ? { issuer: values.issuer } : {}) };
  } else {
    if (values.issuer !== undefined) throw new RevocationUsageError('--issuer narrows only --subject');
    target = { kind: named[0]!, value: values[named[0]!]! };
  }
  const problem = killSwitchTargetProblem(target);
  if (problem) throw new RevocationUsageError(problem);
  return target;
}

const UNIT_SECONDS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3_600, d: 86_400 };

export function parseDuration(text: string): number {
  const match = /^(\d{1,7})([smhd])$/.exec(text.trim());
  const seconds = match ? Number(match[1]) * UNIT_SECONDS[match[2]!]! : NaN;
  if (!(seconds >= 1 && seconds <= MAX_KILL_SWITCH_SECONDS)) throw new RevocationUsageError('--expires-in must be a duration such as 90s, 15m, 1h or 30d, at most 366d');
  return seconds;
}

function describe(target: KillSwitchTarget): string {
  return `${target.kind} ${JSON.stringify(target.value)}${target.issuer !== undefined ? ` of issuer ${JSON.stringify(target.issuer)}` : ''}`;
}
