import { randomUUID } from 'node:crypto';
import { SignJWT, type JWTPayload } from 'jose';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { InvalidClient, OAuthError, TemporarilyUnavailable, type RevocationList } from '@tessera/plugin-sdk';
import { MemoryAuditSink } from '../src/audit/audit-log.js';
import type { LocalKeyRing } from '../src/keys/key-ring.js';
import { silentLogger } from '../src/logging.js';
import { basic, ISSUER, SECRET, secretClientAuthenticator, testKeyRing } from './support/own-token-endpoints.js';
import { ClientAuthenticator } from '../src/oauth/client-auth.js';
import { IntrospectionEndpoint, type IntrospectionResponse } from '../src/oauth/introspection.js';
import { tokenRequestFrom } from '../src/oauth/request.js';
import { InMemoryRevocationList } from '../src/oauth/revocation.js';
import { KillSwitch } from '../src/state/kill-switch.js';
import { MemoryStateStore } from '../src/state/memory-store.js';

let t: number;
const clock = { now: () => new Date(t) };
beforeEach(() => {
  t = Date.parse('2030-01-01T00:00:00Z');
});

describe('IntrospectionEndpoint', () => {
  let ring: LocalKeyRing;
  let other: LocalKeyRing;
  let authenticator: ClientAuthenticator;

  beforeAll(async () => {
    [ring, other] = await Promise.all([testKeyRing(), testKeyRing()]);
    authenticator = await secretClientAuthenticator({ 'client-a': 'client_secret_basic', rs: 'client_secret_basic', api: 'client_secret_basic', public: 'none' }, clock);
  });

  const setup = (revocationList: RevocationList = new InMemoryRevocationList(clock), clients: string[] = ['rs'], killSwitch?: KillSwitch) => {
    const audit = new MemoryAuditSink();
    const endpoint = new IntrospectionEndpoint({
      ...(killSwitch ? { killSwitch } : {}),
      authenticator,
      keyRing: ring,
      revocationList,
      audit,
      clock,
      log: silentLogger,
      broker: { issuer: ISSUER, tokenEndpoint: `${ISSUER}/token` },
      maxTokenBytes: 8_192,
      clients,
    });
    /** As `rs` (Basic) unless `as` says otherwise (null: no credentials). */
    const introspect = (fields: Record<string, string>, as: string | null = 'rs'): Promise<IntrospectionResponse> =>
      endpoint.handle(async () => tokenRequestFrom(new Map(Object.entries(fields).map(([name, value]) => [name, [value]])), as ? basic(as, SECRET) : undefined), 'req-1');
    return { audit, revocationList, introspect };
  };

  const mint = async (overrides: JWTPayload = {}, options: { keys?: LocalKeyRing; typ?: string } = {}) => {
    const now = Math.floor(t / 1000);
    const claims = { iss: ISSUER, sub: 'alice', aud: ['api', 'https://files.example'], iat: now, exp: now + 600, jti: randomUUID(), client_id: 'client-a', ...overrides };
    const { token } = await (options.keys ?? ring).sign(claims, { typ: options.typ ?? 'at+jwt' });
    return { token, claims };
  };
  const rejection = (promise: Promise<unknown>) =>
    promise.then(
      () => undefined,
      (caught: unknown) => caught as OAuthError,
    );

  it('answers the RFC 7662 members of an active token, keeping aud as an array and act exactly', async () => {
    const { audit, introspect } = setup();
    const act = { sub: 'spiffe://td/mcp', iss: 'td', act: { sub: 'spiffe://td/agent', act: { sub: 'spiffe://td/first' } } };
    const { token, claims } = await mint({ scope: 'read write', act, nbf: Math.floor(t / 1000), email: 'alice@example' });
    expect(await introspect({ token })).toEqual({
      active: true,
      scope: 'read write',
      client_id: 'client-a',
      sub: 'alice',
      aud: ['api', 'https://files.example'],
      iss: ISSUER,
      exp: claims.exp,
      iat: claims.iat,
      nbf: claims.nbf,
      jti: claims.jti,
      token_type: 'Bearer',
      act,
    });
    expect(audit.introspections).toEqual([
      { event: 'introspect', decision: 'allow', requestId: 'req-1', client: { id: 'rs', authMethod: 'client_secret_basic' }, active: true, jti: claims.jti, latencyMs: expect.any(Number) },
    ]);
    expect(audit.records).toEqual([]);
  });

  it('lets a client see tokens for it or issued to it; the list adds every token', async () => {
    const { token } = await mint();
    const unlisted = setup(undefined, []);
    for (const caller of ['api', 'client-a']) expect(await unlisted.introspect({ token }, caller)).toMatchObject({ active: true });
    expect(await unlisted.introspect({ token }, 'rs')).toEqual({ active: false });
    expect(unlisted.audit.introspections.at(-1)).toMatchObject({ active: false, reason: 'not visible to this client' });
    expect(await setup(undefined, ['rs']).introspect({ token }, 'rs')).toMatchObject({ active: true });
  });

  it('reports inactive whatever the reason, naming the reason only in the audit', async () => {
    const { audit, introspect } = setup();
    const now = Math.floor(t / 1000);
    const cases: [string, string][] = [
      [(await mint({}, { keys: other })).token, 'not a token of this broker (ERR_JWKS_NO_MATCHING_KEY)'],
      [(await mint({ iss: 'https://other.example' })).token, 'not a token of this broker (ERR_JWT_CLAIM_VALIDATION_FAILED)'],
      [(await mint({}, { typ: 'JWT' })).token, 'not a token of this broker (ERR_JWT_CLAIM_VALIDATION_FAILED)'],
      [(await mint({ client_id: undefined })).token, 'not a token of this broker (ERR_JWT_CLAIM_VALIDATION_FAILED)'],
      [(await mint({ act: 'alice' })).token, 'not a token of this broker (claims)'],
      [(await mint({ aud: [] })).token, 'not a token of this broker (claims)'],
      [(await mint({ iat: now + 31 })).token, 'not yet valid'],
      [(await mint({ iat: now - 600, exp: now })).token, 'expired'],
      [await new SignJWT({ iss: ISSUER, sub: 'a', aud: 'api', iat: now, exp: now + 60, jti: 'x', client_id: 'rs' }).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).sign(new TextEncoder().encode('guess')), 'not a token of this broker (ERR_JOSE_ALG_NOT_ALLOWED)'],
      ['A'.repeat(9_000), 'not a token of this broker (format)'],
    ];
    for (const [token] of cases) expect(await introspect({ token })).toEqual({ active: false });
    expect(audit.introspections.map((record) => record.reason)).toEqual(cases.map(([, reason]) => reason));
    expect(audit.introspections.every((record) => record.decision === 'allow' && record.active === false)).toBe(true);
    // A token a few seconds in the future of this replica's clock came from a replica running slightly fast.
    expect(await introspect({ token: (await mint({ iat: now + 30 })).token })).toMatchObject({ active: true });
  });

  it('tells a caller the kill switch names nothing more: every token is inactive to it', async () => {
    const killSwitch = new KillSwitch(new MemoryStateStore(clock), clock);
    const { audit, introspect } = setup(undefined, ['rs'], killSwitch);
    const { token } = await mint();
    expect(await introspect({ token })).toMatchObject({ active: true });
    await killSwitch.add({ kind: 'client', value: 'rs' }, { expiresAt: new Date(t + 3_600_000) });
    expect(await introspect({ token })).toEqual({ active: false });
    expect(audit.introspections.at(-1)).toMatchObject({ active: false, reason: 'kill switch: client entry' });
  });

  it('refuses public clients and missing credentials with invalid_client', async () => {
    const { audit, introspect } = setup();
    const { token } = await mint();
    for (const fields of [{ token }, { token, client_id: 'public' }] as Record<string, string>[]) {
      const error = await rejection(introspect(fields, null));
      expect(error).toBeInstanceOf(InvalidClient);
      expect(error!.status).toBe(401);
    }
    expect(audit.introspections.at(-1)).toMatchObject({ decision: 'deny', error: 'invalid_client', reason: 'introspection: public clients may not introspect', client: { id: 'public', authMethod: 'none' } });
  });

  it('answers 503 when the revocation list is down, but only to a caller allowed to see the token', async () => {
    const down: RevocationList = { revoke: () => Promise.reject(new Error('down')), isRevoked: () => Promise.reject(new Error('down')) };
    const { audit, introspect } = setup(down, []);
    const { token } = await mint();
    expect(await introspect({ token }, 'rs')).toEqual({ active: false });
    const error = await rejection(introspect({ token }, 'api'));
    expect(error).toBeInstanceOf(TemporarilyUnavailable);
    expect(error!.status).toBe(503);
    expect(audit.introspections.at(-1)).toMatchObject({ decision: 'deny', error: error!.code, reason: 'introspection: revocation list unavailable' });
  });
});
