import type { JSONWebKeySet, JWTPayload, JWTVerifyGetKey } from 'jose';

/** The broker's notion of now. Tests inject a controllable one. */
export interface Clock {
  now(): Date;
}

/** Structured logger (a pino subset). Log the claim's name, never its value. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

export interface FetchJsonOptions {
  /** Response bodies larger than this are refused. */
  readonly maxBytes?: number;
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

/**
 * Outbound HTTP for plugins: HTTPS only (plain HTTP only to loopback, and only where the operator allowed
 * it), no redirects, capped size and time. Rejects with `UpstreamError`.
 */
export interface HttpFetcher {
  getJson(url: string, options?: FetchJsonOptions): Promise<unknown>;
}

/** A JWKS behind a cache: give its resolver to jose's `jwtVerify`. */
export interface JwksCache {
  /**
   * Key resolver for a remote JWKS URL. Keys are cached and served while a refresh runs in the background;
   * an unknown `kid` triggers at most one refresh per cool-down; the last good set survives outages.
   * With no keys at all and the source down, the resolver rejects with `TemporarilyUnavailable`.
   */
  remote(jwksUri: string): JWTVerifyGetKey;
  /** Fetch now (startup warm-up); resolves false instead of throwing when the source is down. */
  warm(jwksUri: string): Promise<boolean>;
}

export interface SignedToken {
  readonly token: string;
  readonly kid: string;
  readonly alg: string;
}

/** The broker's own signing keys. Private keys never leave it. */
export interface KeyRing {
  /** Signs claims as a compact JWS with the active key; `typ` goes into the protected header. */
  sign(claims: JWTPayload, options: { readonly typ: string }): Promise<SignedToken>;
  /** Public verification keys, as published at the JWKS endpoint. */
  publicJwks(): JSONWebKeySet;
  /** Resolver over the broker's own public keys, for verifying tokens it issued. */
  verifier(): JWTVerifyGetKey;
  /** Algorithms of the keys in the ring. */
  readonly algorithms: readonly string[];
}

/**
 * Remembers one-time identifiers (assertion `jti`) until they expire, across every replica sharing the
 * broker's store. Rejects with `TemporarilyUnavailable` when that store cannot answer: let it propagate
 * (a 503), never treat it as a first use.
 */
export interface ReplayStore {
  /** True the first time `key` is seen before `expiresAt`; false for a replay. Atomic across replicas. */
  consume(key: string, expiresAt: Date): Promise<boolean>;
}

/**
 * Identifiers (`jti`) of broker-issued tokens that were revoked (RFC 7009), kept until the token would
 * have expired anyway, shared by every replica on the broker's store. Both methods reject with
 * `TemporarilyUnavailable` when that store cannot answer: let it propagate, never read it as "not revoked".
 */
export interface RevocationList {
  revoke(jti: string, expiresAt: Date): Promise<void>;
  isRevoked(jti: string): Promise<boolean>;
}

export type MetricLabels = Readonly<Record<string, string>>;

export interface Counter {
  inc(labels?: MetricLabels, value?: number): void;
}

export interface Histogram {
  observe(labels: MetricLabels, value: number): void;
}

/**
 * The broker's Prometheus registry (one per broker). Names must start with `tessera_`; asking twice for
 * the same name and kind returns the same metric. Keep label values bounded: never a subject or a token.
 */
export interface Metrics {
  counter(name: string, help: string, labelNames?: readonly string[]): Counter;
  /** Buckets in seconds by default (latency); pass others for other units. */
  histogram(name: string, help: string, labelNames?: readonly string[], buckets?: readonly number[]): Histogram;
}

/** Where this broker is reached: what tokens must name as their audience. */
export interface BrokerInfo {
  readonly issuer: string;
  readonly tokenEndpoint: string;
}

/** An upstream (JWKS, discovery, STS...) failed or answered badly. */
export class UpstreamError extends Error {
  override readonly name = 'UpstreamError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
