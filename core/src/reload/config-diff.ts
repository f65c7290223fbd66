import { createHash } from 'node:crypto';
import type { BrokerConfig } from '../config/schema.js';

/**
 * Settings the process holds, not a config generation: the listener (TLS included) and its connection
 * and in-flight bounds, where it writes (audit, logs), its identity (issuer: every token names it), the
 * outbound fetcher, the state store and the tracer provider (registered once per process).
 */
export const RESTART_ONLY_SETTINGS = ['issuer', 'listen', 'limits.connections', 'limits.inFlight', 'network', 'audit', 'log', 'store', 'tracing'] as const;

/** Restart-only settings that differ between two configs. */
export function restartOnlyChanges(running: BrokerConfig, next: BrokerConfig): string[] {
  return RESTART_ONLY_SETTINGS.filter((path) => canonicalJson(valueAt(running, path)) !== canonicalJson(valueAt(next, path)));
}

/** Short SHA-256 of the config with defaults applied, keys sorted: equal configs give equal digests, whatever their layout. */
export function configDigest(config: BrokerConfig): string {
  return createHash('sha256').update(canonicalJson(config)).digest('hex').slice(0, 16);
}

function valueAt(config: BrokerConfig, path: string): unknown {
  return path.split('.').reduce<unknown>((value, key) => (typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[key] : undefined), config);
}

function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, item: unknown) =>
    typeof item === 'object' && item !== null && !Array.isArray(item) ? Object.fromEntries(Object.entries(item).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : item,
  ) ?? 'undefined';
}
