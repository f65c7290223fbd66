import { webcrypto } from 'node:crypto';
import type { JWK } from 'jose';

const utf8 = new TextEncoder();

/** Canonical base64url: no padding, zero unused trailing bits (what every honest encoder emits). */
export function b64u(data: Uint8Array | ArrayBuffer | string): string {
  return Buffer.from(typeof data === 'string' ? utf8.encode(data) : new Uint8Array(data)).toString('base64url');
}

/** Lenient decode, as JOSE libraries do: padding, the standard alphabet, whitespace and stray trailing bits pass. */
export function lenientBytes(segment: string): Buffer {
  return Buffer.from(segment.replace(/[\s=]/g, '').replaceAll('+', '-').replaceAll('/', '_'), 'base64url');
}

/** WebCrypto parameters of a JWS algorithm (RFC 7518 §3), or undefined for `none` and unknown names. */
function parameters(alg: string): { importAs: webcrypto.Algorithm & Record<string, unknown>; signAs: webcrypto.Algorithm & Record<string, unknown> } | undefined {
  const bits = Number(alg.slice(2));
  if (![256, 384, 512].includes(bits)) return undefined;
  const hash = `SHA-${bits}`;
  switch (alg.slice(0, 2)) {
    case 'RS':
      return { importAs: { name: 'RSASSA-PKCS1-v1_5', hash }, signAs: { name: 'RSASSA-PKCS1-v1_5' } };
    case 'PS':
      return { importAs: { name: 'RSA-PSS', hash }, signAs: { name: 'RSA-PSS', saltLength: bits / 8 } };
    case 'ES':
      return { importAs: { name: 'ECDSA', namedCurve: `P-${bits === 512 ? 521 : bits}` }, signAs: { name: 'ECDSA', hash } };
    case 'HS':
      return { importAs: { name: 'HMAC', hash }, signAs: { name: 'HMAC' } };
    default:
      return undefined;
  }
}

/** A private JWK as a signing key for `alg`; undefined when the key cannot sign with it. */
export async function signingKey(alg: string, jwk: JWK): Promise<webcrypto.CryptoKey | undefined> {
  const { alg: _alg, use: _use, key_ops: _ops, ext: _ext, ...material } = jwk;
  const params = parameters(alg);
  if (!params) return undefined;
  try {
    return await webcrypto.subtle.importKey('jwk', material as webcrypto.JsonWebKey, params.importAs, false, ['sign']);
  } catch {
    return undefined;
  }
}

/**
 * Signs `input` (`header.payload`, exactly as given) and returns the base64url signature. The header and
 * payload text are never re-serialized, so tests can sign duplicate members or odd spacing.
 */
export async function signInput(alg: string, key: webcrypto.CryptoKey, input: string): Promise<string> {
  const params = parameters(alg);
  if (!params) throw new Error(`cannot sign with ${alg}`);
  return b64u(await webcrypto.subtle.sign(params.signAs, key, utf8.encode(input)));
}

/** A compact JWS over the given header and payload text. */
export async function compact(alg: string, key: webcrypto.CryptoKey, headerText: string, payloadText: string): Promise<string> {
  const input = `${b64u(headerText)}.${b64u(payloadText)}`;
  return `${input}.${await signInput(alg, key, input)}`;
}
