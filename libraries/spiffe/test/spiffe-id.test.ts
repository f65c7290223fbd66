import { describe, expect, it } from 'vitest';
import { isSpiffeId, parseSpiffeId, parseTrustDomain, SpiffeIdError, trustDomainId, type SpiffeIdErrorReason } from '../src/spiffe-id.js';

const VALID: [string, string, string][] = [
  ['spiffe://example.org', 'example.org', ''],
  ['spiffe://example.org/workload', 'example.org', '/workload'],
  ['spiffe://example.org/ns/prod/sa/web', 'example.org', '/ns/prod/sa/web'],
  ['spiffe://a-b_c.d0', 'a-b_c.d0', ''],
  ['spiffe://192.168.1.1/x', '192.168.1.1', '/x'], // IPv4-looking names are plain names
  ['spiffe://td/Path.With-All_Chars09', 'td', '/Path.With-All_Chars09'],
  ['spiffe://td/.../..a/.b', 'td', '/.../..a/.b'], // only exact "." and ".." are dot segments
  [`spiffe://${'a'.repeat(255)}`, 'a'.repeat(255), ''],
  [`spiffe://td/${'p'.repeat(2048 - 'spiffe://td/'.length)}`, 'td', `/${'p'.repeat(2048 - 'spiffe://td/'.length)}`],
];

const INVALID: [string, string, SpiffeIdErrorReason][] = [
  ['empty string', '', 'empty'],
  ['longer than 2048 bytes', `spiffe://td/${'p'.repeat(2049 - 'spiffe://td/'.length)}`, 'too_long'],
  ['multibyte pushes past 2048 bytes', `spiffe://td/${'é'.repeat(1100)}`, 'too_long'],
  ['uppercase scheme', 'SPIFFE://example.org', 'wrong_scheme'],
  ['mixed-case scheme', 'Spiffe://example.org', 'wrong_scheme'],
  ['other scheme', 'https://example.org/x', 'wrong_scheme'],
  ['no authority marker', 'spiffe:example.org', 'wrong_scheme'],
  ['single slash', 'spiffe:/example.org', 'wrong_scheme'],
  ['leading space', ' spiffe://example.org', 'wrong_scheme'],
  ['no scheme', 'example.org/workload', 'wrong_scheme'],
  ['empty trust domain', 'spiffe://', 'missing_trust_domain'],
  ['empty trust domain with path', 'spiffe:///workload', 'missing_trust_domain'],
  ['trust domain over 255 bytes', `spiffe://${'a'.repeat(256)}`, 'trust_domain_too_long'],
  ['userinfo', 'spiffe://user@example.org/x', 'userinfo'],
  ['userinfo with password', 'spiffe://user:pw@example.org', 'userinfo'],
  ['port', 'spiffe://example.org:8443/x', 'port'],
  ['empty port', 'spiffe://example.org:', 'port'],
  ['query', 'spiffe://example.org/x?a=b', 'query'],
  ['query on trust domain', 'spiffe://example.org?a', 'query'],
  ['empty query', 'spiffe://example.org/x?', 'query'],
  ['fragment', 'spiffe://example.org/x#frag', 'fragment'],
  ['empty fragment', 'spiffe://example.org#', 'fragment'],
  ['percent-encoded path', 'spiffe://example.org/a%2Fb', 'percent_encoding'],
  ['percent-encoded trust domain', 'spiffe://exa%6Dple.org', 'percent_encoding'],
  ['uppercase trust domain', 'spiffe://Example.org/x', 'uppercase_trust_domain'],
  ['all-uppercase trust domain', 'spiffe://EXAMPLE.ORG', 'uppercase_trust_domain'],
  ['IPv6 literal', 'spiffe://[::1]/x', 'bad_trust_domain_char'],
  ['space in trust domain', 'spiffe://exa mple.org', 'bad_trust_domain_char'],
  ['plus in trust domain', 'spiffe://a+b.org', 'bad_trust_domain_char'],
  ['unicode trust domain', 'spiffe://exämple.org', 'bad_trust_domain_char'],
  ['Kelvin sign is not folded', 'spiffe://\u212Aelvin.org', 'bad_trust_domain_char'],
  ['root path only', 'spiffe://example.org/', 'trailing_slash'],
  ['trailing slash', 'spiffe://example.org/a/', 'trailing_slash'],
  ['empty segment', 'spiffe://example.org//a', 'empty_segment'],
  ['empty segment in the middle', 'spiffe://example.org/a//b', 'empty_segment'],
  ['double trailing slash', 'spiffe://example.org/a//', 'empty_segment'],
  ['dot segment', 'spiffe://example.org/a/./b', 'dot_segment'],
  ['dot-dot segment', 'spiffe://example.org/a/../b', 'dot_segment'],
  ['final dot segment', 'spiffe://example.org/a/..', 'dot_segment'],
  ['space in path', 'spiffe://example.org/a b', 'bad_path_char'],
  ['colon in path', 'spiffe://example.org/a:b', 'bad_path_char'],
  ['tilde in path', 'spiffe://example.org/~x', 'bad_path_char'],
  ['at sign in path', 'spiffe://example.org/a@b', 'bad_path_char'],
  ['unicode in path', 'spiffe://example.org/ä', 'bad_path_char'],
  ['backslash in path', 'spiffe://example.org/a\\b', 'bad_path_char'],
  ['newline in path', 'spiffe://example.org/a\nb', 'bad_path_char'],
];

describe('parseSpiffeId', () => {
  it.each(VALID)('accepts %s', (text, trustDomain, path) => {
    const id = parseSpiffeId(text);
    expect(id).toMatchObject({ trustDomain, path });
    expect(id.toString()).toBe(text);
    expect(`${id}`).toBe(text);
    expect(JSON.stringify({ id })).toBe(JSON.stringify({ id: text }));
    expect(isSpiffeId(text)).toBe(true);
  });

  it.each(INVALID)('rejects %s', (_name, text, reason) => {
    let thrown: unknown;
    try {
      parseSpiffeId(text);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(SpiffeIdError);
    expect((thrown as SpiffeIdError).reason).toBe(reason);
    expect(isSpiffeId(text)).toBe(false);
  });

  it('never echoes the input', () => {
    const secret = 'spiffe://example.org/s3cr3t value';
    expect(() => parseSpiffeId(secret)).toThrow(SpiffeIdError);
    try {
      parseSpiffeId(secret);
    } catch (error) {
      expect(String(error)).not.toContain('s3cr3t');
    }
  });

  it('returns a frozen value', () => {
    const id = parseSpiffeId('spiffe://example.org/a');
    expect(Object.isFrozen(id)).toBe(true);
  });

  it('isSpiffeId is false for non-strings', () => {
    expect(isSpiffeId(undefined)).toBe(false);
    expect(isSpiffeId(42)).toBe(false);
  });
});

describe('trust domains', () => {
  it('parseTrustDomain accepts a bare name', () => {
    expect(parseTrustDomain('example.org')).toBe('example.org');
  });

  it.each([
    ['', 'missing_trust_domain'],
    ['spiffe://example.org', 'port'],
    ['Example.org', 'uppercase_trust_domain'],
    ['example.org/x', 'bad_trust_domain_char'],
    ['a@b', 'userinfo'],
    ['a%41', 'percent_encoding'],
    ['a'.repeat(256), 'trust_domain_too_long'],
  ] as const)('parseTrustDomain rejects %j', (name, reason) => {
    expect(() => parseTrustDomain(name)).toThrow(expect.objectContaining({ reason }));
  });

  it('trustDomainId gives the trust domain ID', () => {
    expect(trustDomainId('example.org')).toBe('spiffe://example.org');
    expect(() => trustDomainId('EXAMPLE.org')).toThrow(SpiffeIdError);
  });
});
