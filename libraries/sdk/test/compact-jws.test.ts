import { describe, expect, it } from 'vitest';
import { decodeUnverifiedJwt, hasDuplicateMembers, isCompactJws, InvalidToken } from '../src/index.js';

const b64 = (text: string) => Buffer.from(text).toString('base64url');
const jwt = (header: string, payload: string) => `${b64(header)}.${b64(payload)}.c2ln`;

describe('isCompactJws: one token, one spelling', () => {
  it('accepts canonical base64url segments', () => {
    expect(isCompactJws('eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl')).toBe(true);
  });

  it('refuses non-zero unused trailing bits in any segment, padding, and impossible lengths', () => {
    // "e30" encodes "{}" (16 bits in 3 chars: 2 unused bits); "e31" decodes to the same bytes.
    expect(isCompactJws('eyJhbGciOiJFUzI1NiJ9.e31.c2lnbmF0dXJl')).toBe(false);
    // "c2ln" is "sig" (no unused bits); "c2lnbQ" is "sigm" (4 unused), "c2lnbR" the same bytes respelled.
    expect(isCompactJws('eyJhbGciOiJFUzI1NiJ9.e30.c2lnbQ')).toBe(true);
    expect(isCompactJws('eyJhbGciOiJFUzI1NiJ9.e30.c2lnbR')).toBe(false);
    expect(isCompactJws('eyJhbGciOiJFUzI1NiJ9.e30=.c2ln')).toBe(false);
    expect(isCompactJws('eyJhbGciOiJFUzI1NiJ9.e.c2ln')).toBe(false);
  });
});

describe('hasDuplicateMembers', () => {
  it.each([
    ['{"a":1,"a":2}', true],
    ['{"a":{"b":1,"b":2}}', true],
    ['{"a":[{"b":1},{"b":2}]}', false],
    ['{"a":"\\"a\\"","b":"a"}', false],
    ['{"\\u0061":1,"a":2}', true],
    ['{"a":1,"b":{"a":2}}', false],
    ['[{"a":1,"a":1}]', true],
  ])('%s → %s', (text, expected) => expect(hasDuplicateMembers(text)).toBe(expected));
});

describe('decodeUnverifiedJwt', () => {
  const reason = (token: string) => {
    try {
      decodeUnverifiedJwt(token, 16_384);
      return 'accepted';
    } catch (error) {
      return (error as InvalidToken).detail;
    }
  };

  it('refuses a header or claims set that names a member twice (parsers disagree on which wins)', () => {
    expect(reason(jwt('{"alg":"none","alg":"ES256"}', '{"sub":"a"}'))).toBe('malformed: a member is named twice');
    expect(reason(jwt('{"alg":"ES256"}', '{"sub":"a","sub":"b"}'))).toBe('malformed: a member is named twice');
    expect(reason(jwt('{"alg":"ES256"}', '{"act":{"sub":"a","sub":"b"}}'))).toBe('malformed: a member is named twice');
  });

  it('refuses registered claims of the wrong type', () => {
    for (const [claims, claim] of [['{"jti":1}', 'jti'], ['{"sub":["a"]}', 'sub'], ['{"iss":{}}', 'iss'], ['{"exp":"1"}', 'exp'], ['{"aud":[1]}', 'aud']]) {
      expect(reason(jwt('{"alg":"ES256"}', claims!))).toBe(`claims: claim ${claim} has the wrong type`);
    }
    expect(reason(jwt('{"alg":"ES256"}', '{"sub":"a","aud":["x","y"],"exp":1.5,"jti":"j"}'))).toBe('accepted');
  });

  it('refuses a header or claims segment that is not UTF-8 (U+FFFD would give it another spelling)', () => {
    const notUtf8 = (json: string) => Buffer.from(json.replace('?', '\u00ff'), 'latin1').toString('base64url');
    expect(reason(`${notUtf8('{"alg":"ES256","x":"?"}')}.${b64('{"sub":"a"}')}.c2ln`)).toMatch(/^malformed/);
    expect(reason(`${b64('{"alg":"ES256"}')}.${notUtf8('{"sub":"?"}')}.c2ln`)).toMatch(/^malformed/);
  });
});
