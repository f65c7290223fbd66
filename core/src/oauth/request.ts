/** RFC 8693 §2.1: the only parameters that may repeat. */
export const REPEATABLE_PARAMETERS: ReadonlySet<string> = new Set(['audience', 'resource']);

/** Which door a request came through: the form token endpoint, the JSON exchange, the SPIFFE exchange. */
export const FRONT_DOORS = ['token', 'json-exchange', 'spiffe-exchange'] as const;
export type FrontDoor = (typeof FRONT_DOORS)[number];

/** Decoded token-endpoint parameters. Empty values were dropped (RFC 6749 §3.2: same as absent). */
export interface TokenRequest {
  get(name: string): string | undefined;
  getAll(name: string): readonly string[];
  /** The raw `Authorization` header, if any. */
  readonly authorization: string | undefined;
  readonly frontDoor: FrontDoor;
}

export function tokenRequestFrom(
  parameters: ReadonlyMap<string, readonly string[]>,
  authorization?: string,
  frontDoor: FrontDoor = 'token',
): TokenRequest {
  return {
    get: (name) => parameters.get(name)?.[0],
    getAll: (name) => parameters.get(name) ?? [],
    authorization,
    frontDoor,
  };
}
