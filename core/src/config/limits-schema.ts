import { z } from 'zod';

/**
 * Defaults for limits.inFlight, measured on a 2-core machine (docs/operations.md, "Capacity and shedding"):
 * throughput stops rising at about 16 exchanges in flight; twice that leaves room for requests waiting on
 * a JWKS fetch or the state store without adding more than a few tens of milliseconds under full load.
 */
export const IN_FLIGHT_DEFAULTS = {
  max: 32,
  queue: 64,
  queueTimeoutMs: 200,
  retryAfterSeconds: 1,
};

export const inFlightSchema = z
  .object({
    max: z
      .number()
      .int()
      .min(1)
      .max(65_536)
      .default(IN_FLIGHT_DEFAULTS.max)
      .describe('Most requests to the token, exchange, revocation and introspection endpoints processed at once, per broker process'),
    queue: z
      .number()
      .int()
      .min(0)
      .max(65_536)
      .default(IN_FLIGHT_DEFAULTS.queue)
      .describe('Requests beyond max that wait for a slot, first come first served; beyond this they get 503 at once'),
    queueTimeoutMs: z
      .number()
      .int()
      .min(0)
      .max(30_000)
      .default(IN_FLIGHT_DEFAULTS.queueTimeoutMs)
      .describe('Longest wait for a slot; past it the request gets 503 (0: no waiting)'),
    retryAfterSeconds: z
      .number()
      .int()
      .min(1)
      .max(3_600)
      .default(IN_FLIGHT_DEFAULTS.retryAfterSeconds)
      .describe('Retry-After of a shed request'),
  })
  .strict()
  .default(IN_FLIGHT_DEFAULTS)
  .describe('Admission control, once a request\'s body has arrived: past the bound requests are refused with 503 and Retry-After before any signature is checked; probes, keys, metadata and metrics are never shed');

export const rateLimitSchema = z
  .object({
    requests: z.number().int().min(1).max(1_000_000_000).describe('Token requests a client may make in one window'),
    windowSeconds: z.number().int().min(1).max(86_400).describe('Length of the fixed window; windows start at multiples of it (Unix time)'),
  })
  .strict();

export type RateLimit = z.output<typeof rateLimitSchema>;

export const VERIFIED_TOKEN_DEFAULTS = {
  maxEntries: 10_000,
  maxAgeSeconds: 60,
};

export const verifiedTokensSchema = z
  .object({
    maxEntries: z
      .number()
      .int()
      .min(0)
      .max(1_000_000)
      .default(VERIFIED_TOKEN_DEFAULTS.maxEntries)
      .describe('Verified subject and actor tokens remembered at most, per broker process (least recently used dropped first); 0 verifies every presentation'),
    maxAgeSeconds: z
      .number()
      .int()
      .min(1)
      .max(3_600)
      .default(VERIFIED_TOKEN_DEFAULTS.maxAgeSeconds)
      .describe('Longest a verification is reused, whatever the token\'s own expiry: bounds how long a key removed from an issuer\'s JWKS still vouches for tokens it signed'),
  })
  .strict()
  .default(VERIFIED_TOKEN_DEFAULTS)
  .describe('Reuse of verified subject and actor tokens presented again (an agent exchanging one token for several audiences), for validators that allow it. Keyed by a hash of the token, the client and the role; never for client assertions or other single-use proofs; revocation, policy and the kill switch are checked on every request');
