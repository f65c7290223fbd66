/** RFC 8693 §2.1: the only parameters that may repeat. */
export const REPEATABLE_PARAMETERS: ReadonlySet<string> = new Set(['audience', 'resource']);

/** Decoded token-endpoint parameters. Empty values were dropped (RFC 6749 §3.2: same as absent). */
export interface TokenRequest {
  get(name: string): string | undefined;
  getAll(name: string): readonly string[];
  /** The raw `Authorization` header, if any. */
  readonly authorization: string | undefined;
  /** Subject and actor tokens must name this broker itself (the SPIFFE exchange door). */
  readonly brokerAudienceOnly?: boolean;
}

export function tokenRequestFrom(
  parameters: ReadonlyMap<string, readonly string[]>,
  authorization?: string,
  options: { brokerAudienceOnly?: boolean } = {},
): TokenRequest {
  return {
    get: (name) => parameters.get(name)?.[0],
    getAll: (name) => parameters.get(name) ?? [],
    authorization,
    ...(options.brokerAudienceOnly ? { brokerAudienceOnly: true } : {}),
  };
}
