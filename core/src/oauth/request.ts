import { InvalidRequest } from '@tessera/plugin-sdk';

/** RFC 8693 §2.1: the only parameters that may repeat. */
export const REPEATABLE_PARAMETERS: ReadonlySet<string> = new Set(['audience', 'resource']);

/** Checked by `parameters.ts`, which refuses them with `invalid_target` / `invalid_scope`. */
const TARGET_AND_SCOPE_PARAMETERS: ReadonlySet<string> = new Set(['audience', 'resource', 'scope']);

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

/**
 * Every door's parameters become one request here. A value that is not well-formed Unicode (undecodable
 * bytes in a form, a lone surrogate escape in JSON) refuses the request: no check or token downstream ever
 * sees one.
 */
export function tokenRequestFrom(
  parameters: ReadonlyMap<string, readonly string[]>,
  authorization?: string,
  frontDoor: FrontDoor = 'token',
): TokenRequest {
  for (const [name, values] of parameters) {
    if (TARGET_AND_SCOPE_PARAMETERS.has(name)) continue;
    if (!name.isWellFormed() || !values.every((value) => value.isWellFormed())) {
      throw new InvalidRequest('a parameter is not valid UTF-8', { detail: `parameter encoding of ${name.isWellFormed() ? name.slice(0, 64) : '(name)'}` });
    }
  }
  return {
    get: (name) => parameters.get(name)?.[0],
    getAll: (name) => parameters.get(name) ?? [],
    authorization,
    frontDoor,
  };
}
