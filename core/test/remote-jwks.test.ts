import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { exportJWK, generateKeyPair, jwtVerify, SignJWT, type CryptoKey, type JWK, type JWTVerifyGetKey } from 'jose';
import { TemporarilyUnavailable } from '@tessera/plugin-sdk';
import { GuardedFetcher } from '../src/http/fetcher.js';
import { RemoteJwksCache, type RemoteJwksOptions } from '../src/keys/remote-jwks.js';
import { silentLogger } from '../src/logging.js';
import { startLoopbackServer, type LoopbackServer } from './support/loopback.js';

const OPTIONS: RemoteJwksOptions = { maxAgeMs: 60_000, cooldownMs: 10_000, minBackoffMs: 2_000, maxBackoffMs: 8_000 };

interface SigningKey {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
}

async function signingKey(kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  return { kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' } };
}

function sign(key: SigningKey, kid = key.kid): Promise<string> {
  return new SignJWT({ sub: 'workload' }).setProtectedHeader({ alg: 'ES256', kid }).setIssuer('https://idp.example').sign(key.privateKey);
}

/** The issuer's JWKS endpoint: what it publishes, whether it is down, and whether answers are held back. */
interface Issuer {
  keys: JWK[];
  down: boolean;
  /** While set, requests wait until `release()`. */
  held: boolean;
  release(): void;
}

let keyA: SigningKey;
let keyB: SigningKey;
let server: LoopbackServer;
let issuer: Issuer;
let t: number;
let cache: RemoteJwksCache;
let jwksUri: string;
let resolver: JWTVerifyGetKey;

const clock = { now: () => new Date(t) };
const fetches = () => server.requests.length;
const verify = (token: string) => jwtVerify(token, resolver, { issuer: 'https://idp.example' });

beforeEach(async () => {
  [keyA, keyB] = await Promise.all([signingKey('kid-a'), signingKey('kid-b')]);
  let waiting: (() => void)[] = [];
  issuer = {
    keys: [keyA.publicJwk],
    down: false,
    held: false,
    release() {
      this.held = false;
      for (const answer of waiting) answer();
      waiting = [];
    },
  };
  server = await startLoopbackServer((_req, res) => {
    const answer = () => {
      if (issuer.down) {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('down');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: issuer.keys }));
    };
    if (issuer.held) waiting.push(answer);
    else answer();
  });
  t = Date.parse('2030-01-01T00:00:00Z');
  jwksUri = `${server.origin}/.well-known/jwks.json`;
  const fetcher = new GuardedFetcher({ allowLoopbackHttp: true, timeoutMs: 5_000, maxResponseBytes: 65_536 });
  cache = new RemoteJwksCache(fetcher, clock, silentLogger, OPTIONS);
  resolver = cache.remote(jwksUri);
});

afterEach(async () => {
  issuer.release();
  await server.close();
});

describe('RemoteJwksCache', () => {
  it('fetches once on first use and then serves from the cache', async () => {
    const token = await sign(keyA);
    await expect(verify(token)).resolves.toMatchObject({ payload: { sub: 'workload' }, protectedHeader: { kid: 'kid-a' } });
    expect(fetches()).toBe(1);
    t += OPTIONS.maxAgeMs - 1;
    await verify(token);
    await verify(token);
    expect(fetches()).toBe(1);
  });

  it('shares one fetch between concurrent first uses', async () => {
    const token = await sign(keyA);
    await Promise.all(Array.from({ length: 20 }, () => verify(token)));
    expect(fetches()).toBe(1);
  });

  it('shares entries between resolvers of one URI', async () => {
    await verify(await sign(keyA));
    await expect(jwtVerify(await sign(keyA), cache.remote(jwksUri))).resolves.toBeDefined();
    expect(fetches()).toBe(1);
  });

  it('still rejects a bad signature from a known kid', async () => {
    await verify(await sign(keyA));
    const forged = await sign(keyB, 'kid-a');
    await expect(verify(forged)).rejects.toMatchObject({ code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });
    expect(fetches()).toBe(1);
  });

  describe('rotation', () => {
    it('picks up a new kid after the cool-down, not before', async () => {
      await verify(await sign(keyA));
      issuer.keys = [keyB.publicJwk];
      const rotated = await sign(keyB);

      t += OPTIONS.cooldownMs - 1;
      await expect(verify(rotated)).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
      expect(fetches()).toBe(1);

      t += 1;
      await expect(verify(rotated)).resolves.toMatchObject({ protectedHeader: { kid: 'kid-b' } });
      expect(fetches()).toBe(2);

      // The retired key is gone from the refreshed set; the next refresh is again a cool-down away.
      await expect(verify(await sign(keyA))).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
      expect(fetches()).toBe(2);
    });

    it('keeps the cool-down when the refreshed set still lacks the kid', async () => {
      await verify(await sign(keyA));
      t += OPTIONS.cooldownMs;
      const unknown = await sign(keyB);
      await expect(verify(unknown)).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
      expect(fetches()).toBe(2);
      await expect(verify(unknown)).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
      expect(fetches()).toBe(2);
    });
  });

  describe('unknown-kid flood', () => {
    const flood = async (count: number) => {
      const tokens = await Promise.all(Array.from({ length: count }, () => sign(keyA, randomUUID())));
      return Promise.allSettled(tokens.map((token) => verify(token)));
    };

    it('triggers at most one fetch per cool-down', async () => {
      await verify(await sign(keyA));
      expect(fetches()).toBe(1);

      const inCooldown = await flood(50);
      expect(inCooldown.every((result) => result.status === 'rejected')).toBe(true);
      expect(fetches()).toBe(1);

      t += OPTIONS.cooldownMs;
      const afterCooldown = await flood(50);
      expect(afterCooldown.every((result) => result.status === 'rejected')).toBe(true);
      expect(fetches()).toBe(2);

      const again = await flood(50);
      expect(again.every((result) => result.status === 'rejected')).toBe(true);
      expect(fetches()).toBe(2);

      // Known keys keep working throughout.
      await expect(verify(await sign(keyA))).resolves.toBeDefined();
      expect(fetches()).toBe(2);
    });

    it('rejects the flood with no-matching-key, not a server fault', async () => {
      await verify(await sign(keyA));
      t += OPTIONS.cooldownMs;
      const results = await flood(10);
      for (const result of results) {
        expect(result.status).toBe('rejected');
        expect((result as PromiseRejectedResult).reason).toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
      }
    });
  });

  describe('outages', () => {
    it('keeps serving known keys when a refresh fails', async () => {
      const token = await sign(keyA);
      await verify(token);
      issuer.down = true;

      t += OPTIONS.maxAgeMs;
      await expect(verify(token)).resolves.toBeDefined();
      await vi.waitFor(() => expect(fetches()).toBe(2));
      await expect(verify(token)).resolves.toBeDefined();
      // A failed refresh leaves the last good set in place, even for an unknown-kid refresh.
      t += OPTIONS.maxAgeMs;
      await expect(verify(await sign(keyB))).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
      await expect(verify(token)).resolves.toBeDefined();
      expect(fetches()).toBe(3);
    });

    it('refreshes in the background after maxAge while serving the stale keys', async () => {
      await verify(await sign(keyA));
      issuer.keys = [keyA.publicJwk, keyB.publicJwk];
      issuer.held = true;

      t += OPTIONS.maxAgeMs - 1;
      await verify(await sign(keyA));
      expect(fetches()).toBe(1);

      t += 1;
      // Answered from the stale set while the refresh is still waiting on the issuer.
      await expect(verify(await sign(keyA))).resolves.toBeDefined();
      await vi.waitFor(() => expect(fetches()).toBe(2));
      await expect(verify(await sign(keyA))).resolves.toBeDefined();
      expect(fetches()).toBe(2);

      issuer.release();
      await expect(verify(await sign(keyB))).resolves.toMatchObject({ protectedHeader: { kid: 'kid-b' } });
      expect(fetches()).toBe(2);
    });

    it('rejects with TemporarilyUnavailable and Retry-After when it has no keys and the source is down', async () => {
      issuer.down = true;
      const error = await verify(await sign(keyA)).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(TemporarilyUnavailable);
      const unavailable = error as TemporarilyUnavailable;
      expect(unavailable.code).toBe('temporarily_unavailable');
      expect(unavailable.status).toBe(503);
      expect(unavailable.headers['Retry-After']).toBe(String(OPTIONS.minBackoffMs / 1000));
      expect(unavailable.detail).toContain(server.origin);
      expect(fetches()).toBe(1);
    });

    it('shares one failed fetch between concurrent first uses', async () => {
      issuer.down = true;
      const token = await sign(keyA);
      const results = await Promise.allSettled(Array.from({ length: 20 }, () => verify(token)));
      expect(results.every((result) => result.status === 'rejected' && result.reason instanceof TemporarilyUnavailable)).toBe(true);
      expect(fetches()).toBe(1);
    });

    it('backs off exponentially after failures, up to maxBackoffMs, and recovers', async () => {
      issuer.down = true;
      const token = await sign(keyA);
      const retryAfter = async () => {
        const error = await verify(token).then(
          () => undefined,
          (caught: unknown) => caught,
        );
        expect(error).toBeInstanceOf(TemporarilyUnavailable);
        return (error as TemporarilyUnavailable).headers['Retry-After'];
      };

      expect(await retryAfter()).toBe('2');
      expect(fetches()).toBe(1);

      t += OPTIONS.minBackoffMs - 1;
      expect(await retryAfter()).toBe('1'); // 1 ms left, rounded up
      expect(fetches()).toBe(1);

      t += 1;
      expect(await retryAfter()).toBe('4'); // second failure: backoff doubled
      expect(fetches()).toBe(2);

      t += 2 * OPTIONS.minBackoffMs - 1;
      await retryAfter();
      expect(fetches()).toBe(2);

      t += 1;
      expect(await retryAfter()).toBe('8');
      expect(fetches()).toBe(3);

      t += 8_000;
      expect(await retryAfter()).toBe('8'); // capped at maxBackoffMs
      expect(fetches()).toBe(4);

      issuer.down = false;
      t += 7_999;
      await retryAfter();
      expect(fetches()).toBe(4);
      t += 1;
      await expect(verify(token)).resolves.toBeDefined();
      expect(fetches()).toBe(5);
    });

    it('backs off unknown-kid refreshes too while the source is down', async () => {
      await verify(await sign(keyA));
      issuer.down = true;
      t += OPTIONS.cooldownMs;
      const unknown = await sign(keyB);
      await expect(verify(unknown)).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
      expect(fetches()).toBe(2);

      t += OPTIONS.minBackoffMs - 1;
      await expect(verify(unknown)).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
      expect(fetches()).toBe(2);

      t += 1;
      await expect(verify(unknown)).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
      expect(fetches()).toBe(3);
    });

    it('treats a malformed JWKS as a failed fetch and keeps the last good set', async () => {
      const token = await sign(keyA);
      await verify(token);
      issuer.keys = 'not a key list' as unknown as JWK[];
      t += OPTIONS.cooldownMs;
      await expect(verify(await sign(keyB))).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
      expect(fetches()).toBe(2);
      await expect(verify(token)).resolves.toBeDefined();
    });
  });

  describe('warm', () => {
    it('resolves true after a good fetch and serves its keys without another', async () => {
      await expect(cache.warm(jwksUri)).resolves.toBe(true);
      await verify(await sign(keyA));
      expect(fetches()).toBe(1);
    });

    it('resolves false instead of throwing when the source is down', async () => {
      issuer.down = true;
      await expect(cache.warm(jwksUri)).resolves.toBe(false);
      expect(fetches()).toBe(1);
    });
  });
});
