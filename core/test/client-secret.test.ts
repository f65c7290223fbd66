import { describe, expect, it } from 'vitest';
import { hashClientSecret, parseScryptHash, verifyClientSecret } from '../src/oauth/client-secret.js';

const SALT = 'c2FsdHNhbHRzYWx0c2FsdA'; // 16 bytes, base64url
const HASH = 'aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g'; // 32 bytes, base64url
const encoded = (params: string, salt = SALT, hash = HASH) => `$scrypt$${params}$${salt}$${hash}`;

describe('client secrets', () => {
  it('round-trips a secret through hash and verify', async () => {
    const stored = await hashClientSecret('correct horse battery staple');
    expect(stored).toMatch(/^\$scrypt\$N=16384,r=8,p=1\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+$/);
    expect(stored).not.toContain('correct horse');
    const parsed = parseScryptHash(stored);
    expect(parsed).toMatchObject({ N: 16_384, r: 8, p: 1 });
    expect(parsed!.salt).toHaveLength(16);
    expect(parsed!.hash).toHaveLength(32);
    await expect(verifyClientSecret('correct horse battery staple', parsed!)).resolves.toBe(true);
  });

  it('refuses a wrong secret', async () => {
    const parsed = parseScryptHash(await hashClientSecret('s3cret'))!;
    await expect(verifyClientSecret('s3cret ', parsed)).resolves.toBe(false);
    await expect(verifyClientSecret('S3cret', parsed)).resolves.toBe(false);
    await expect(verifyClientSecret('', parsed)).resolves.toBe(false);
  });

  it('salts every hash', async () => {
    const [first, second] = await Promise.all([hashClientSecret('same'), hashClientSecret('same')]);
    expect(first).not.toBe(second);
    expect(parseScryptHash(first)!.salt.equals(parseScryptHash(second)!.salt)).toBe(false);
    await expect(verifyClientSecret('same', parseScryptHash(second)!)).resolves.toBe(true);
  });

  it('verifies with the cost parameters stored in the hash', async () => {
    const parsed = parseScryptHash(await hashClientSecret('s3cret'))!;
    await expect(verifyClientSecret('s3cret', { ...parsed, N: 1024 })).resolves.toBe(false);
  });

  describe('parseScryptHash', () => {
    it('accepts the bounds', () => {
      expect(parseScryptHash(encoded('N=1024,r=1,p=1'))).toMatchObject({ N: 1024, r: 1, p: 1 });
      expect(parseScryptHash(encoded('N=524288,r=1,p=4'))).toMatchObject({ N: 524_288, r: 1, p: 4 });
      expect(parseScryptHash(encoded('N=16384,r=32,p=1'))).toMatchObject({ N: 16_384, r: 32, p: 1 });
    });

    it.each([
      ['empty', ''],
      ['not scrypt', `$argon2id$v=19$m=65536,t=3,p=4$${SALT}$${HASH}`],
      ['missing hash', `$scrypt$N=16384,r=8,p=1$${SALT}`],
      ['reordered parameters', encoded('r=8,N=16384,p=1')],
      ['non-numeric cost', encoded('N=abc,r=8,p=1')],
      ['salt too short', encoded('N=16384,r=8,p=1', 'c2FsdA')],
      ['hash too short', encoded('N=16384,r=8,p=1', SALT, 'aGFzaA')],
      ['standard base64 alphabet', encoded('N=16384,r=8,p=1', SALT, `${HASH.slice(0, -1)}+`)],
      ['trailing garbage', `${encoded('N=16384,r=8,p=1')}$x`],
      ['leading whitespace', ` ${encoded('N=16384,r=8,p=1')}`],
      ['a plaintext secret', 'hunter2'],
    ])('rejects a malformed hash: %s', (_label, value) => {
      expect(parseScryptHash(value)).toBeUndefined();
    });

    it.each([
      ['N below 1024', 'N=512,r=8,p=1'],
      ['N above 2^20', 'N=2097152,r=8,p=1'],
      ['N not a power of two', 'N=16383,r=8,p=1'],
      ['N zero', 'N=0,r=8,p=1'],
      ['r zero', 'N=16384,r=0,p=1'],
      ['r above 32', 'N=16384,r=33,p=1'],
      ['p zero', 'N=16384,r=8,p=0'],
      ['p above 4', 'N=16384,r=8,p=5'],
      ['memory above 64 MiB', 'N=65536,r=16,p=1'],
      ['the old upper bounds (4 GiB per check)', 'N=1048576,r=32,p=16'],
      ['absurd N', 'N=99999999999999999999,r=8,p=1'],
    ])('rejects out-of-bounds cost: %s', (_label, params) => {
      expect(parseScryptHash(encoded(params))).toBeUndefined();
    });
  });
});
