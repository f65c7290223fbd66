import { exportJWK, generateKeyPair, type JWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { BundleError, MAX_BUNDLE_BYTES, parseJwtBundle, parseJwtBundleMap, parseSpiffeBundle, type BundleErrorReason } from '../src/bundle.js';
import { SpiffeIdError } from '../src/spiffe-id.js';

let ec: JWK;
let rsa: JWK;
const CA_DER = Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01]);

beforeAll(async () => {
  ec = await exportJWK((await generateKeyPair('ES256')).publicKey);
  rsa = await exportJWK((await generateKeyPair('RS256')).publicKey);
});

function reasonOf(run: () => unknown): BundleErrorReason | undefined {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(BundleError);
    return (error as BundleError).reason;
  }
  return undefined;
}

describe('parseSpiffeBundle', () => {
  it('keeps jwt-svid keys, turns x509-svid keys into CA certs, skips others', () => {
    const document = JSON.stringify({
      keys: [
        { ...ec, use: 'jwt-svid', kid: 'a' },
        { ...rsa, use: 'jwt-svid', kid: 'b' },
        { kty: 'EC', use: 'x509-svid', x5c: [CA_DER.toString('base64')] },
        { ...ec, kid: 'no-use' },
        { ...ec, use: 'sig', kid: 'unknown-use' },
        { ...ec, use: 'JWT-SVID', kid: 'use-is-case-sensitive' },
        { kty: 'OKP', crv: 'Ed25519', x: 'AAAA', use: 'jwt-svid', kid: 'not-a-jwt-svid-alg' },
      ],
      spiffe_sequence: 42,
      spiffe_refresh_hint: 300,
    });
    const bundle = parseSpiffeBundle('example.org', document);
    expect(bundle.trustDomain).toBe('example.org');
    expect(bundle.keys.map((key) => key.kid)).toEqual(['a', 'b']);
    expect(bundle.keys[0]).toMatchObject({ kty: 'EC', crv: 'P-256', x: ec.x, y: ec.y });
    expect(bundle.x509Authorities).toEqual([CA_DER]);
    expect(bundle.sequence).toBe(42);
    expect(bundle.refreshHintSeconds).toBe(300);
  });

  it('accepts an empty key set (all keys revoked) and absent hints', () => {
    const bundle = parseSpiffeBundle('example.org', Buffer.from('{"keys":[]}'));
    expect(bundle).toEqual({ trustDomain: 'example.org', keys: [], x509Authorities: [] });
  });

  it('requires a kid on jwt-svid keys', () => {
    expect(reasonOf(() => parseSpiffeBundle('td', JSON.stringify({ keys: [{ ...ec, use: 'jwt-svid' }] })))).toBe('missing_kid');
  });

  it.each([
    [{ kty: 'EC', use: 'x509-svid' }],
    [{ kty: 'EC', use: 'x509-svid', x5c: [] }],
    [{ kty: 'EC', use: 'x509-svid', x5c: ['AAAA', 'AAAA'] }],
    [{ kty: 'EC', use: 'x509-svid', x5c: ['not base64!'] }],
    [{ kty: 'EC', use: 'x509-svid', x5c: [42] }],
  ])('refuses a bad x509-svid entry %j', (key) => {
    expect(reasonOf(() => parseSpiffeBundle('td', JSON.stringify({ keys: [key] })))).toBe('bad_x5c');
  });
});

describe('parseJwtBundle (plain JWKS from SPIRE)', () => {
  it('takes every key without looking at use', () => {
    const bundle = parseJwtBundle('example.org', JSON.stringify({ keys: [{ ...ec, kid: 'a' }, { ...rsa, kid: 'b', use: 'sig' }] }));
    expect(bundle.keys.map((key) => key.kid)).toEqual(['a', 'b']);
    expect(bundle).not.toHaveProperty('sequence');
    expect(bundle).not.toHaveProperty('refreshHintSeconds');
  });

  it('keeps the JWK members as sent', () => {
    const bundle = parseJwtBundle('td', JSON.stringify({ keys: [{ ...ec, kid: 'a' }] }));
    expect(Object.keys(bundle.keys[0] ?? {}).sort()).toEqual(['crv', 'kid', 'kty', 'x', 'y']);
  });

  it.each<[string, string | Uint8Array, BundleErrorReason]>([
    ['non-JSON', 'not json', 'not_json'],
    ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0x7d]), 'not_json'],
    ['a JSON array', '[]', 'not_object'],
    ['JSON null', 'null', 'not_object'],
    ['no keys', '{}', 'missing_keys'],
    ['keys not an array', '{"keys":{}}', 'missing_keys'],
    ['a key that is not an object', '{"keys":[1]}', 'bad_key'],
    ['a key without kty', '{"keys":[{"kid":"a"}]}', 'bad_key'],
    ['a JWT key without kid', '{"keys":[{"kty":"EC","crv":"P-256","x":"A","y":"B"}]}', 'missing_kid'],
    ['an empty kid', '{"keys":[{"kty":"EC","kid":""}]}', 'missing_kid'],
    ['duplicate kids', '{"keys":[{"kty":"EC","kid":"a"},{"kty":"RSA","kid":"a"}]}', 'duplicate_kid'],
    ['a private EC key', '{"keys":[{"kty":"EC","kid":"a","d":"secret"}]}', 'private_key'],
    ['a symmetric key', '{"keys":[{"kty":"oct","kid":"a","k":"secret"}]}', 'private_key'],
    ['a fractional sequence', '{"keys":[],"spiffe_sequence":1.5}', 'bad_sequence'],
    ['a negative sequence', '{"keys":[],"spiffe_sequence":-1}', 'bad_sequence'],
    ['a sequence beyond 2^53', '{"keys":[],"spiffe_sequence":18446744073709551615}', 'bad_sequence'],
    ['a string sequence', '{"keys":[],"spiffe_sequence":"1"}', 'bad_sequence'],
    ['a string refresh hint', '{"keys":[],"spiffe_refresh_hint":"60"}', 'bad_refresh_hint'],
  ])('refuses %s', (_name, document, reason) => {
    expect(reasonOf(() => parseJwtBundle('example.org', document))).toBe(reason);
  });

  it('refuses documents over 1 MiB, before parsing', () => {
    const big = `{"keys":[],"pad":"${'x'.repeat(MAX_BUNDLE_BYTES)}"}`;
    expect(reasonOf(() => parseJwtBundle('td', big))).toBe('too_large');
    expect(reasonOf(() => parseJwtBundle('td', Buffer.from(big)))).toBe('too_large');
  });

  it('refuses a bad trust domain name', () => {
    expect(() => parseJwtBundle('Example.org', '{"keys":[]}')).toThrow(SpiffeIdError);
  });

  it('never echoes key material in errors', () => {
    try {
      parseJwtBundle('td', '{"keys":[{"kty":"EC","kid":"a","d":"TOPSECRET"}]}');
    } catch (error) {
      expect(String(error)).not.toContain('TOPSECRET');
    }
  });
});

describe('parseJwtBundleMap', () => {
  it('keys by trust domain name and leaves bad entries out', () => {
    const good = Buffer.from(JSON.stringify({ keys: [{ ...ec, kid: 'a' }] }));
    const { bundles, refused } = parseJwtBundleMap({
      'spiffe://example.org': good,
      'spiffe://broken.example': Buffer.from('{'),
      'spiffe://example.org/not-a-td': good,
      'example.net': good,
    });
    expect([...bundles.keys()]).toEqual(['example.org']);
    expect(refused).toEqual([{ trustDomain: 'broken.example', reason: 'not_json' }, { reason: 'bad_trust_domain_id' }, { reason: 'bad_trust_domain_id' }]);
  });
});
