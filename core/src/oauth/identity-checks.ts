import { acceptedUntil, InvalidToken, type VerifiedIdentity } from '@tessera/plugin-sdk';

/** What core expects of an identity a plugin returned, whoever wrote the plugin. */
export interface IdentityExpectation {
  /** The token type the caller presented: the identity must say it is of this type. */
  readonly tokenType: string;
  readonly now: Date;
  /** Skew the plugin declared (`clockSkewSeconds`); 0 when it declared none. */
  readonly clockSkewSeconds: number | undefined;
  /** When set, the identity's audiences must name one of these (the broker's issuer or token endpoint). */
  readonly brokerAudiences?: ReadonlySet<string>;
}

/** A plugin returned something that is not an identity: a bug in the plugin, refused like any fault. */
export class IdentityShapeFault extends Error {}

/**
 * The invariants every identity must satisfy before policy reads it, checked here once rather than trusted
 * to each plugin: well-formed (a plugin bug otherwise, so it fails closed), non-empty issuer and subject,
 * the presented token type, not past expiry plus the plugin's declared skew, and, where the door or grant
 * requires it, an audience naming this broker. A lax or buggy third-party plugin cannot mint tokens for
 * expired or foreign tokens.
 */
export function checkIdentity(identity: unknown, expect: IdentityExpectation): VerifiedIdentity {
  const fault = identityFault(identity, expect.tokenType);
  if (fault) throw new IdentityShapeFault(`plugin returned ${fault}`);
  const checked = identity as VerifiedIdentity;
  if (expect.now.getTime() >= acceptedUntil(checked.expiresAt, expect.clockSkewSeconds).getTime()) {
    throw new InvalidToken('expired', 'past expiry (checked by core)');
  }
  if (expect.brokerAudiences && !checked.audiences.some((audience) => expect.brokerAudiences!.has(audience))) {
    throw new InvalidToken('audience', 'does not name this broker (checked by core)');
  }
  return checked;
}

function identityFault(identity: unknown, tokenType: string): string | undefined {
  if (typeof identity !== 'object' || identity === null) return 'no identity';
  const { issuer, subject, audiences, expiresAt, claims, attributes, tokenType: type } = identity as Partial<VerifiedIdentity>;
  if (type !== tokenType) return 'an identity of another token type';
  if (typeof issuer !== 'string' || issuer === '' || typeof subject !== 'string' || subject === '') return 'an identity without issuer or subject';
  if (!Array.isArray(audiences) || !audiences.every((audience) => typeof audience === 'string')) return 'malformed audiences';
  if (!(expiresAt instanceof Date) || Number.isNaN(expiresAt.getTime())) return 'a malformed expiry';
  if (typeof claims !== 'object' || claims === null) return 'malformed claims';
  if (!isAttributeMap(attributes)) return 'attributes that are not strings or lists of strings';
  return undefined;
}

export function isAttributeMap(value: unknown): value is Record<string, string | readonly string[]> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  return Object.values(value).every((item) => typeof item === 'string' || (Array.isArray(item) && item.every((entry) => typeof entry === 'string')));
}
