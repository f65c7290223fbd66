import type { VerifiedIdentity } from '@tessera/plugin-sdk';

/** Identities are plugin output: check their shape before policy reads them, so a plugin bug fails closed. */
export function identityFault(identity: unknown, tokenType: string): string | undefined {
  if (typeof identity !== 'object' || identity === null) return 'no identity';
  const { issuer, subject, audiences, expiresAt, claims, attributes, tokenType: type } = identity as Partial<VerifiedIdentity>;
  if (type !== tokenType) return 'an identity of another token type';
  if (typeof issuer !== 'string' || typeof subject !== 'string' || subject === '') return 'an identity without issuer or subject';
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
