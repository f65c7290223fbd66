import { randomUUID } from 'node:crypto';
import { SignJWT, type JWTPayload } from 'jose';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { InvalidClient, InvalidGrant, InvalidRequest, OAuthError, TemporarilyUnavailable, type RevocationList } from '@tessera/plugin-sdk';
import { MemoryAuditSink } from '../src/audit/audit-log.js';
import type { LocalKeyRing } from '../src/keys/key-ring.js';
import { silentLogger } from '../src/logging.js';
import { basic, ISSUER, SECRET, secretClientAuthenticator, testKeyRing } from './support/own-token-endpoints.js';
import { ClientAuthenticator } from '../src/oauth/client-auth.js';
import { tokenRequestFrom } from '../src/oauth/request.js';
import { InMemoryRevocationList, REVOCATION_MARGIN_SECONDS, RevocationEndpoint } from '../src/oauth/revocation.js';

let t: number;
const clock = { now: () => new Date(t) };
const at = (offsetMs: number) => new Date(t + offsetMs);

beforeEach(() => {
  t = Date.parse('2030-01-01T00:00:00Z');
});

describe('InMemoryRevocationList', () => {
  it('reports a jti revoked until its expiry, and only that jti', async () => {
    const list = new InMemoryRevocationList(clock);
    await list.revoke('jti-1', at(60_000));
    await expect(list.isRevoked('jti-1')).resolves.toBe(true);
    await expect(list.isRevoked('jti-2')).resolves.toBe(false);
    t += 59_999;
    await expect(list.isRevoked('jti-1')).resolves.toBe(true);
    t += 1;
    await expect(list.isRevoked('jti-1')).resolves.toBe(false);
  });

  it('ignores a revocation that has already expired', async () => {
    const list = new InMemoryRevocationList(clock);
    await list.revoke('old', at(0));
    await list.revoke('older', at(-1_000));
    expect(list.size).toBe(0);
    await expect(list.isRevoked('old')).resolves.toBe(false);
  });

  it('never shortens an entry when revoked again', async () => {
    const list = new InMemoryRevocationList(clock);
    await list.revoke('jti', at(3_600_000));
    await list.revoke('jti', at(10_000));
    t += 10_000;
    await expect(list.isRevoked('jti')).resolves.toBe(true);
  });

  it('sweeps expired entries at most once per interval', async () => {
    const list = new InMemoryRevocationList(clock, 1_000);
    await list.revoke('short-1', at(500));
    await list.revoke('short-2', at(500));
    await list.revoke('long', at(60_000));
    expect(list.size).toBe(3);
    t += 600; // expired, but the next sweep is not due yet
    await list.isRevoked('long');
    expect(list.size).toBe(3);
    t += 400;
    await expect(list.isRevoked('long')).resolves.toBe(true);
    expect(list.size).toBe(1);
  });
});

describe('RevocationEndpoint', () => {
  let ring: LocalKeyRing;
  let other: LocalKeyRing;
  let authenticator: ClientAuthenticator;

  beforeAll(async () => {
    [ring, other] = await Promise.all([testKeyRing(), testKeyRing()]);
    authenticator = await secretClientAuthenticator({ 'client-a': 'client_secret_basic', 'client-b': 'client_secret_post', public: 'none' }, clock);
  });

  const setup = (revocationList: RevocationList = new InMemoryRevocationList(clock)) => {
    const audit = new MemoryAuditSink();
    const endpoint = new RevocationEndpoint({
      authenticator,
      keyRing: ring,
      revocationList,
      audit,
      clock,
      log: silentLogger,
      broker: { issuer: ISSUER, tokenEndpoint: `${ISSUER}/token` },
      maxTokenBytes: 8_192,
    });
    /** As client-a (Basic) unless `authorization` says otherwise (null: no header). */
    const revoke = (fields: Record<string, string>, authorization: string | null = basic('client-a', SECRET)) =>
      endpoint.handle(async () => tokenRequestFrom(new Map(Object.entries(fields).map(([name, value]) => [name, [value]])), authorization ?? undefined), 'req-1');
    return { audit, revocationList, revoke };
  };

  /** An access token as the broker's issuer writes it, at the test clock. */
  const mint = async (overrides: JWTPayload = {}, options: { keys?: LocalKeyRing; typ?: string } = {}) => {
    const now = Math.floor(t / 1000);
    const jti = randomUUID();
    const claims = { iss: ISSUER, sub: 'alice', aud: 'https://api.example', iat: now, exp: now + 600, jti, client_id: 'client-a', ...overrides };
    const { token } = await (options.keys ?? ring).sign(claims, { typ: options.typ ?? 'at+jwt' });
    return { token, jti: claims.jti as string, exp: claims.exp as number };
  };

  const rejection = (promise: Promise<unknown>) =>
    promise.then(
      () => undefined,
      (caught: unknown) => caught as OAuthError,
    );

  it('revokes a live token of this broker for the client it was issued to, until exp plus the margin', async () => {
    const { audit, revocationList, revoke } = setup();
    const { token, jti, exp } = await mint();
    await revoke({ token, token_type_hint: 'access_token' });
    await expect(revocationList.isRevoked(jti)).resolves.toBe(true);
    t = (exp + REVOCATION_MARGIN_SECONDS) * 1000 - 1;
    await expect(revocationList.isRevoked(jti)).resolves.toBe(true);
    t += 1;
    await expect(revocationList.isRevoked(jti)).resolves.toBe(false);
    expect(audit.revocations).toEqual([
      { event: 'revoke', decision: 'allow', requestId: 'req-1', client: { id: 'client-a', authMethod: 'client_secret_basic' }, outcome: 'revoked', jti, tokenTypeHint: 'access_token', latencyMs: expect.any(Number) },
    ]);
    expect(audit.records).toEqual([]);
  });

  it('is idempotent', async () => {
    const { revocationList, revoke } = setup();
    const { token, jti } = await mint();
    await revoke({ token });
    await revoke({ token });
    await expect(revocationList.isRevoked(jti)).resolves.toBe(true);
  });

  it('refuses (RFC 7009 §2.1) a token issued to another client, and leaves it alone', async () => {
    const { audit, revocationList, revoke } = setup();
    const { token, jti } = await mint({ client_id: 'client-a' });
    const error = await rejection(revoke({ token, client_id: 'client-b', client_secret: SECRET }, null));
    expect(error).toBeInstanceOf(InvalidGrant);
    expect([error!.status, error!.code]).toEqual([400, 'invalid_grant']);
    await expect(revocationList.isRevoked(jti)).resolves.toBe(false);
    expect(audit.revocations.at(-1)).toMatchObject({ decision: 'deny', error: 'invalid_grant', reason: 'revocation: token issued to another client', client: { id: 'client-b' }, jti });
  });

  it('answers unknown, foreign, mistyped and long-expired tokens without revoking anything (§2.2)', async () => {
    const { audit, revocationList, revoke } = setup();
    const now = Math.floor(t / 1000);
    const foreign = await mint({}, { keys: other });
    const otherIssuer = await mint({ iss: 'https://other.example' });
    const plainJwt = await mint({}, { typ: 'JWT' });
    const expired = await mint({ iat: now - 4_000, exp: now - REVOCATION_MARGIN_SECONDS - 1 });
    const attacker = await new SignJWT({ iss: ISSUER, jti: 'x', exp: now + 60, client_id: 'client-a' }).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).sign(new TextEncoder().encode('guess'));
    const cases = ['not-a-token', 'a.b.c', 'A'.repeat(9_000), foreign.token, otherIssuer.token, plainJwt.token, expired.token, attacker];
    for (const token of cases) await revoke({ token, token_type_hint: 'something_else' });
    expect(revocationList instanceof InMemoryRevocationList && revocationList.size).toBe(0);
    expect(audit.revocations.map((record) => [record.decision, record.outcome])).toEqual(cases.map(() => ['allow', 'ignored']));
    expect(audit.revocations.every((record) => record.tokenTypeHint === undefined && record.jti === undefined)).toBe(true);
    expect(audit.revocations.at(-2)!.reason).toBe('expired');
    const serialized = JSON.stringify(audit.revocations);
    for (const token of cases) for (const part of token.split('.')) if (part.length >= 16) expect(serialized).not.toContain(part.slice(0, 16));
  });

  it('still revokes a token just past exp that a skewed validator might take', async () => {
    const { revocationList, revoke } = setup();
    const now = Math.floor(t / 1000);
    const { token, jti } = await mint({ iat: now - 600, exp: now - 20 });
    await revoke({ token });
    await expect(revocationList.isRevoked(jti)).resolves.toBe(true);
  });

  it('requires the token parameter', async () => {
    const { audit, revoke } = setup();
    const error = await rejection(revoke({ token_type_hint: 'access_token' }));
    expect(error).toBeInstanceOf(InvalidRequest);
    expect([error!.status, error!.code, error!.description]).toEqual([400, 'invalid_request', 'token is required']);
    expect(audit.revocations.at(-1)).toMatchObject({ decision: 'deny', error: 'invalid_request', client: { id: 'client-a' } });
  });

  it('requires client authentication: none at all, a wrong secret and a public client are invalid_client', async () => {
    const { audit, revocationList, revoke } = setup();
    const { token, jti } = await mint();
    for (const [fields, authorization] of [
      [{ token }, null],
      [{ token }, basic('client-a', 'wrong')],
      [{ token, client_id: 'public' }, null],
    ] as const) {
      const error = await rejection(revoke(fields, authorization));
      expect(error).toBeInstanceOf(InvalidClient);
      expect(error!.status).toBe(401);
      expect(error!.headers['WWW-Authenticate']).toBe('Basic realm="tessera"');
    }
    await expect(revocationList.isRevoked(jti)).resolves.toBe(false);
    expect(audit.revocations.map((record) => record.error)).toEqual(['invalid_client', 'invalid_client', 'invalid_client']);
    expect(audit.revocations.at(-1)).toMatchObject({ reason: 'revocation: public clients may not revoke', client: { id: 'public', authMethod: 'none' } });
  });

  it('answers 503 when the revocation list is unavailable, so the client retries (§2.2.1)', async () => {
    const broken: RevocationList = { revoke: () => Promise.reject(new Error('redis down')), isRevoked: async () => false };
    const { audit, revoke } = setup(broken);
    const error = await rejection(revoke({ token: (await mint()).token }));
    expect(error).toBeInstanceOf(TemporarilyUnavailable);
    expect([error!.status, error!.headers['Retry-After']]).toEqual([503, '5']);
    expect(audit.revocations.at(-1)).toMatchObject({ decision: 'deny', error: 'temporarily_unavailable' });
  });
});
