import { writeFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { SignJWT, type JWTHeaderParameters, type JWTPayload } from 'jose';
import { generateTestKey, type TestKey } from '@tessera/plugin-testkit';

/** A trust domain the way SPIRE runs one: JWT signing keys published as a SPIFFE bundle. */
export class TestTrustDomain {
  private constructor(
    readonly name: string,
    public keys: TestKey[],
  ) {}

  static async create(name = 'example.org', alg = 'ES256'): Promise<TestTrustDomain> {
    return new TestTrustDomain(name, [await generateTestKey(alg)]);
  }

  get id(): string {
    return `spiffe://${this.name}`;
  }

  /** SPIFFE bundle document (JWT-SVID keys carry `use: jwt-svid`). */
  bundle(sequence = 1): Record<string, unknown> {
    const keys = this.keys.map(({ publicJwk }) => {
      const { alg: _alg, use: _use, ...key } = publicJwk;
      return { ...key, use: 'jwt-svid' };
    });
    return { keys, spiffe_sequence: sequence, spiffe_refresh_hint: 60 };
  }

  async writeBundle(path: string, sequence = 1): Promise<void> {
    // Write-then-rename like a ConfigMap update, so a reader never sees half a file.
    const temporary = `${path}.${randomUUID()}.tmp`;
    await writeFile(temporary, JSON.stringify(this.bundle(sequence)));
    const { rename } = await import('node:fs/promises');
    await rename(temporary, path);
  }

  async rotate(): Promise<TestKey> {
    const next = await generateTestKey(this.keys[0]!.alg);
    this.keys = [next];
    return next;
  }

  /** A JWT-SVID as SPIRE mints one: sub, aud, exp, iat; header alg, kid, typ JWT. */
  async mint(path: string, audience: string | string[], options: { expiresIn?: number; claims?: JWTPayload; header?: Partial<JWTHeaderParameters>; key?: TestKey } = {}): Promise<string> {
    const key = options.key ?? this.keys[0]!;
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ sub: `${this.id}${path}`, aud: audience, iat: now, exp: now + (options.expiresIn ?? 300), ...options.claims })
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...options.header })
      .sign(key.privateKey);
  }
}
