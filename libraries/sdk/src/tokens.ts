import type { BrokerInfo, Clock, HttpFetcher, JwksCache, KeyRing, Logger, Metrics, ReplayStore, RevocationList } from './services.js';

declare const tokenType: unique symbol;

/** A DI token: a symbol that carries the type of what it resolves to. */
export type Token<T> = symbol & { readonly [tokenType]?: T };

/** The type a token resolves to. */
export type TokenValue<K> = K extends Token<infer T> ? T : never;

/** Creates a DI token. Ids follow `tessera.<name>`; each call makes a distinct token. */
export function token<T>(id: string): Token<T> {
  return Symbol(id) as Token<T>;
}

/** Core services a plugin may ask for in its `deps`. Nothing else of core is reachable from a plugin. */
export const tokens = {
  clock: token<Clock>('tessera.clock'),
  logger: token<Logger>('tessera.logger'),
  httpFetcher: token<HttpFetcher>('tessera.httpFetcher'),
  jwksCache: token<JwksCache>('tessera.jwksCache'),
  keyRing: token<KeyRing>('tessera.keyRing'),
  replayStore: token<ReplayStore>('tessera.replayStore'),
  revocationList: token<RevocationList>('tessera.revocationList'),
  brokerInfo: token<BrokerInfo>('tessera.brokerInfo'),
  metrics: token<Metrics>('tessera.metrics'),
} as const;
