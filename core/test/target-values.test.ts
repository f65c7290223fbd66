import { describe, expect, it } from 'vitest';
import { isAbsoluteUriWithoutFragment, isSafeAudience, isScopeToken } from '../src/oauth/target-values.js';

describe('resource: RFC 3986 absolute URI without fragment', () => {
  it.each([
    'https://api.example.test',
    'https://api.example.test/',
    'https://api.example.test:8443/v1/items?x=1&y=%2F',
    'https://user:pw@api.example.test/a',
    'https://[2001:db8::1]/x',
    'https://[v1.fe80::a+en1]/x',
    'https://[V1.fe80::a+en1]/x',
    'urn:ietf:params:oauth:token-type:jwt',
    'spiffe://example.org/ns/default/sa/api',
    'mailto:ops@example.test',
    'file:///etc/x',
  ])('accepts %s', (value) => expect(isAbsoluteUriWithoutFragment(value)).toBe(true));

  it.each([
    ['a fragment', 'https://api.example.test/#x'],
    ['an empty fragment', 'https://api.example.test/#'],
    ['a relative reference', '/v1/items'],
    ['no scheme', 'api.example.test'],
    ['a space', 'https://api.example.test/a b'],
    ['a tab', 'https://api.example.test/\t'],
    ['a NUL', 'https://api.example.test/\u0000'],
    ['a backslash (WHATWG URL reads it as /)', 'https:\\\\api.example.test\\x'],
    ['non-ASCII', 'https://äpi.example.test/'],
    ['a stray %', 'https://api.example.test/%zz'],
    ['a bad IPv6 literal', 'https://[2001:db8::zz]/'],
    ['a caret', 'https://api.example.test/^'],
    ['a scheme starting with a digit', '1https://x'],
  ])('refuses %s', (_, value) => expect(isAbsoluteUriWithoutFragment(value)).toBe(false));
});

describe('audience values', () => {
  it.each(['https://api.example.test', 'billing', 'spiffe://example.org/api', 'ünïcode-name'])('accepts %s', (value) => expect(isSafeAudience(value)).toBe(true));

  it.each([
    ['NUL', 'api\u0000'],
    ['a control character', 'api\u0007'],
    ['DEL', 'api\u007f'],
    ['a C1 control', 'api\u0085'],
    ['a space inside', 'api one'],
    ['a newline', 'api\nX-Injected: 1'],
    ['a no-break space', 'api\u00a0'],
    ['a bidi override', 'api\u202etxt'],
    ['a zero-width space', 'a\u200bpi'],
    ['a lone surrogate (undecodable input)', 'api\udc80'],
    ['an empty value', ''],
  ])('refuses %s', (_, value) => expect(isSafeAudience(value)).toBe(false));
});

describe('scope tokens (RFC 6749 §3.3)', () => {
  it('accepts printable ASCII but quote and backslash', () => {
    expect(isScopeToken('read:items')).toBe(true);
    for (const bad of ['a"b', 'a\\b', 'a b', 'é', 'a\u0000']) expect(isScopeToken(bad)).toBe(false);
  });
});
