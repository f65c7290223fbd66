import { randomBytes, scrypt as scryptCallback, timingSafeEqual, type ScryptOptions } from 'node:crypto';

const scrypt = (secret: string, salt: Buffer, length: number, options: ScryptOptions) =>
  new Promise<Buffer>((resolve, reject) => scryptCallback(secret, salt, length, options, (error, key) => (error ? reject(error) : resolve(key))));

const DEFAULT_PARAMS = { N: 16_384, r: 8, p: 1 } as const;
const HASH_FORMAT = /^\$scrypt\$N=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9_-]{16,})\$([A-Za-z0-9_-]{32,})$/;

export interface ScryptHash {
  readonly N: number;
  readonly r: number;
  readonly p: number;
  readonly salt: Buffer;
  readonly hash: Buffer;
}

/** `$scrypt$N=16384,r=8,p=1$<salt>$<hash>` (base64url): what config stores instead of a client secret. */
export async function hashClientSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scrypt(secret, salt, 32, { ...DEFAULT_PARAMS, maxmem: 64 * 1024 * 1024 });
  const { N, r, p } = DEFAULT_PARAMS;
  return `$scrypt$N=${N},r=${r},p=${p}$${salt.toString('base64url')}$${hash.toString('base64url')}`;
}

/** Parses a stored hash; undefined when malformed or its cost is outside sane bounds. */
export function parseScryptHash(encoded: string): ScryptHash | undefined {
  const match = HASH_FORMAT.exec(encoded);
  if (!match) return undefined;
  const [N, r, p] = [Number(match[1]), Number(match[2]), Number(match[3])];
  // Every unauthenticated request for a known client id pays this cost: keep memory (128·N·r) ≤ 64 MiB.
  if (N < 1024 || (N & (N - 1)) !== 0 || r < 1 || r > 32 || p < 1 || p > 4 || 128 * N * r > 64 * 1024 * 1024) return undefined;
  return { N, r, p, salt: Buffer.from(match[4]!, 'base64url'), hash: Buffer.from(match[5]!, 'base64url') };
}

export async function verifyClientSecret(secret: string, stored: ScryptHash): Promise<boolean> {
  const candidate = await scrypt(secret, stored.salt, stored.hash.length, {
    N: stored.N,
    r: stored.r,
    p: stored.p,
    maxmem: 256 * stored.N * stored.r + 1024 * 1024,
  });
  return timingSafeEqual(candidate, stored.hash);
}
