import { describe, expect, it } from 'vitest';
import type { ValidationContext, VerifiedIdentity } from '@tessera/plugin-sdk';
import { VerifiedTokenCache } from '../src/oauth/verified-token-cache.js';

const NOW = new Date('2026-12-03T12:00:00Z');
const ctx = (overrides: Partial<ValidationContext> = {}): ValidationContext => ({
  role: 'subject',
  tokenType: 'urn:ietf:params:oauth:token-type:id_token',
  brokerIssuer: 'https://broker.example.test',
  tokenEndpoint: 'https://broker.example.test/token',
  now: NOW,
  signal: new AbortController().signal,
  client: { id: 'client-a', authMethod: 'private_key_jwt' } as ValidationContext['client'],
  ...overrides,
});
const identity = (expiresInSeconds: number): VerifiedIdentity => ({
  issuer: 'https://idp.example.test',
  subject: 'alice',
  audiences: ['https://broker.example.test'],
  expiresAt: new Date(NOW.getTime() + expiresInSeconds * 1000),
  tokenType: 'urn:ietf:params:oauth:token-type:id_token',
  claims: {},
  attributes: {},
});
const later = (seconds: number) => new Date(NOW.getTime() + seconds * 1000);

describe('VerifiedTokenCache', () => {
  it('reuses an identity for the same token and context until the token expires', () => {
    const cache = new VerifiedTokenCache({ maxEntries: 10, maxAgeSeconds: 3600 });
    const key = VerifiedTokenCache.key('token-1', ctx());
    cache.set(key, identity(30), NOW);
    expect(cache.get(key, later(29))).toEqual(identity(30));
    expect(cache.get(key, later(30))).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it('reuses for at most maxAgeSeconds, however long the token lives', () => {
    const cache = new VerifiedTokenCache({ maxEntries: 10, maxAgeSeconds: 60 });
    const key = VerifiedTokenCache.key('token-1', ctx());
    cache.set(key, identity(3600), NOW);
    expect(cache.get(key, later(59))).toBeDefined();
    expect(cache.get(key, later(60))).toBeUndefined();
  });

  it('keys on the token and on every part of the context a result depends on', () => {
    const base = VerifiedTokenCache.key('token-1', ctx());
    const others = [
      VerifiedTokenCache.key('token-2', ctx()),
      VerifiedTokenCache.key('token-1', ctx({ role: 'actor' })),
      VerifiedTokenCache.key('token-1', ctx({ tokenType: 'urn:ietf:params:oauth:token-type:jwt' })),
      VerifiedTokenCache.key('token-1', ctx({ brokerAudienceOnly: true })),
      VerifiedTokenCache.key('token-1', ctx({ client: { id: 'client-b', authMethod: 'private_key_jwt' } as ValidationContext['client'] })),
      VerifiedTokenCache.key('token-1', ctx({ client: undefined })),
    ];
    expect(new Set([base, ...others]).size).toBe(others.length + 1);
    // The token itself is not kept, only its digest.
    expect(base).not.toContain('token-1');
  });

  it('drops the least recently used entry when full', () => {
    const cache = new VerifiedTokenCache({ maxEntries: 2, maxAgeSeconds: 60 });
    const [a, b, c] = ['a', 'b', 'c'].map((token) => VerifiedTokenCache.key(token, ctx())) as [string, string, string];
    cache.set(a, identity(60), NOW);
    cache.set(b, identity(60), NOW);
    expect(cache.get(a, NOW)).toBeDefined(); // a is now the most recent
    cache.set(c, identity(60), NOW);
    expect(cache.get(b, NOW)).toBeUndefined();
    expect(cache.get(a, NOW)).toBeDefined();
    expect(cache.get(c, NOW)).toBeDefined();
  });

  it('keeps nothing when off or when the identity has already expired', () => {
    const off = new VerifiedTokenCache({ maxEntries: 0, maxAgeSeconds: 60 });
    expect(off.enabled).toBe(false);
    off.set('k', identity(60), NOW);
    expect(off.size).toBe(0);
    const on = new VerifiedTokenCache({ maxEntries: 10, maxAgeSeconds: 60 });
    on.set('k', identity(0), NOW);
    expect(on.size).toBe(0);
  });
});
