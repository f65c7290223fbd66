import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { compactVerify, flattenedVerify, generalVerify, importJWK, type FlattenedJWS, type GeneralJWS, type JWK } from 'jose';
import { describe, expect, it } from 'vitest';
import { ASYMMETRIC_ALGORITHMS } from '@tessera/plugin-sdk';
import { isCompactJws } from '@tessera/plugin-sdk';

// Read in place from the shared vectors (never copied into the repository).
const VECTORS = resolve(import.meta.dirname, '../../../shared/vectors/wycheproof/json_web_signature_test.json');

interface Vector {
  tcId: number;
  comment: string;
  jws: string | FlattenedJWS | GeneralJWS;
  result: 'valid' | 'invalid';
  flags: string[];
}
interface Group {
  public?: JWK;
  private?: JWK;
  tests: Vector[];
}

/**
 * Where the broker is deliberately stricter than a vector's label. Each entry says why; nothing else may
 * disagree with the vectors.
 */
const STRICTER: Readonly<Record<number, string>> = {
  346: 'header alg PS384 on a key whose alg is PS256: the key decides the algorithm (RFC 7517 §4.4, RFC 8725 §3.1)',
  350: 'header alg PS384 on a key whose alg is PS256: the key decides the algorithm (RFC 7517 §4.4, RFC 8725 §3.1)',
};

/**
 * The verification discipline the broker applies to every JWT: compact serialization in canonical
 * base64url only, keys pinned by configuration, exactly the key's own asymmetric algorithm allowed, no
 * header-supplied keys.
 */
async function brokerAccepts(vector: Vector, jwk: JWK): Promise<boolean> {
  if (typeof vector.jws !== 'string' || !isCompactJws(vector.jws)) return false;
  const alg = jwk.alg === 'ES521' ? 'ES512' : jwk.alg; // the vectors spell P-521 ECDSA as ES521
  const algorithms = alg && (ASYMMETRIC_ALGORITHMS as readonly string[]).includes(alg) ? [alg] : [];
  if (algorithms.length === 0) return false;
  try {
    await compactVerify(vector.jws, await importJWK(jwk, alg), { algorithms });
    return true;
  } catch {
    return false;
  }
}

/** The same vectors through jose alone with the key's algorithm allowed (JSON serializations included). */
async function joseAccepts(vector: Vector, jwk: JWK): Promise<boolean> {
  const alg = jwk.alg === 'ES521' ? 'ES512' : jwk.alg;
  if (!alg) return false;
  try {
    const key = await importJWK(jwk, alg);
    if (typeof vector.jws === 'string') await compactVerify(vector.jws, key, { algorithms: [alg] });
    else if ('signatures' in vector.jws) await generalVerify(vector.jws, key, { algorithms: [alg] });
    else await flattenedVerify(vector.jws, key, { algorithms: [alg] });
    return true;
  } catch {
    return false;
  }
}

describe('Wycheproof JWS vectors', async () => {
  const file = JSON.parse(await readFile(VECTORS, 'utf8')) as { testGroups: Group[]; numberOfTests: number };
  const cases = file.testGroups.flatMap((group) => group.tests.map((vector) => ({ vector, jwk: (group.public ?? group.private)! })));
  const asymmetric = cases.filter(({ jwk }) => jwk.kty !== 'oct');
  const symmetric = cases.filter(({ jwk }) => jwk.kty === 'oct');

  it('covers the whole file', () => {
    expect(asymmetric.length + symmetric.length).toBe(file.numberOfTests);
  });

  it.each(asymmetric.map(({ vector, jwk }) => [`#${vector.tcId} ${vector.result} ${vector.comment}`, vector, jwk] as const))(
    'broker: %s',
    async (_name, vector, jwk) => {
      const expected = vector.result === 'valid' && STRICTER[vector.tcId] === undefined;
      expect(await brokerAccepts(vector, jwk)).toBe(expected);
    },
  );

  it('broker: no symmetric (HMAC) vector verifies, valid or not: HS* is never on an allow-list', async () => {
    for (const { vector, jwk } of symmetric) expect(await brokerAccepts(vector, jwk), `#${vector.tcId}`).toBe(false);
    const algorithms = new Set(symmetric.map(({ jwk }) => jwk.alg));
    for (const alg of algorithms) expect(ASYMMETRIC_ALGORITHMS as readonly string[]).not.toContain(alg);
  });

  it('jose alone refuses every invalid asymmetric vector', async () => {
    for (const { vector, jwk } of asymmetric) {
      if (vector.result === 'invalid') expect(await joseAccepts(vector, jwk), `#${vector.tcId} ${vector.comment}`).toBe(false);
    }
  });
});
