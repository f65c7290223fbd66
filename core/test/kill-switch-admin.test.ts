import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { beforeEach, describe, expect, it } from 'vitest';
import { CLIENT_ASSERTION_TYPE_JWT_BEARER, OAuthError, type JwksCache } from '@tessera/plugin-sdk';
import { AuditSinkError, MemoryAuditSink, type AuditEntry, type AuditSink } from '../src/audit/audit-log.js';
import { validateConfig } from '../src/config/load.js';
import { silentLogger } from '../src/logging.js';
import { ClientAuthenticator } from '../src/oauth/client-auth.js';
import { InMemoryReplayStore } from '../src/oauth/replay-store.js';
import { tokenRequestFrom } from '../src/oauth/request.js';
import { AdminRevocationsEndpoint, type AdminAction } from '../src/state/kill-switch-admin.js';
import { KillSwitch } from '../src/state/kill-switch.js';
import { MemoryStateStore } from '../src/state/memory-store.js';
import { StoreUnavailable, type StateStore } from '../src/state/store.js';

const ISSUER = 'https://broker.example';
const ADMIN_URL = `${ISSUER}/admin/revocations`;
const TOKEN_ENDPOINT = `${ISSUER}/token`;
const ADMIN = 'ops-admin';
const clock = { now: () => new Date() };
const noRemoteKeys: JwksCache = { remote: () => () => Promise.reject(new Error('inline keys only')), warm: async () => false };

let privateKey: CryptoKey;
let publicJwk: Record<string, unknown>;
beforeEach(async () => {
  const pair = await generateKeyPair('ES256');
  privateKey = pair.privateKey;
  publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256' };
});

function assertion(aud: string | string[]): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: ADMIN, sub: ADMIN, aud, jti: randomUUID(), iat: now, exp: now + 60 }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).sign(privateKey);
}

/** A store that can be made to fail one kind of call, as a Redis outage does. */
class FlakyStore implements StateStore {
  readonly kind = 'memory' as const;
  readonly inner = new MemoryStateStore(clock);
  failing = new Set<'put' | 'getMany' | 'delete'>();
  #fail<T>(what: 'put' | 'getMany' | 'delete', run: () => Promise<T>): Promise<T> {
    return this.failing.has(what) ? Promise.reject(new StoreUnavailable()) : run();
  }
  claimOnce(key: string, ttlMs: number) {
    return this.inner.claimOnce(key, ttlMs);
  }
  put(key: string, value: string, ttlMs: number) {
    return this.#fail('put', () => this.inner.put(key, value, ttlMs));
  }
  getMany(keys: readonly string[]) {
    return this.#fail('getMany', () => this.inner.getMany(keys));
  }
  list(prefix: string) {
    return this.inner.list(prefix);
  }
  delete(key: string) {
    return this.#fail('delete', () => this.inner.delete(key));
  }
  hit(key: string, windowMs: number) {
    return this.inner.hit(key, windowMs);
  }
  ping() {
    return this.inner.ping();
  }
  close() {
    return this.inner.close();
  }
}

/** An audit sink that can be made to refuse every record (a full disk). */
class FailingSink implements AuditSink {
  readonly inner = new MemoryAuditSink();
  failing = false;
  async record(entry: AuditEntry): Promise<void> {
    if (this.failing) throw new AuditSinkError('write failed: ENOSPC');
    await this.inner.record(entry);
  }
}

function setUp(clientAuth: Record<string, unknown> = {}) {
  const config = validateConfig({
    issuer: ISSUER,
    clients: [{ id: ADMIN, auth: { method: 'private_key_jwt', jwks: { keys: [publicJwk] } }, grantTypes: ['client_credentials'] }],
    clientAuth,
    admin: { clients: [ADMIN] },
  });
  const authenticator = new ClientAuthenticator(config.clients, config.clientAuth, { jwks: noRemoteKeys, replay: new InMemoryReplayStore(clock), clock, broker: { issuer: ISSUER, tokenEndpoint: TOKEN_ENDPOINT } });
  const store = new FlakyStore();
  const killSwitch = new KillSwitch(store, clock);
  const audit = new FailingSink();
  const endpoint = new AdminRevocationsEndpoint({ authenticator, killSwitch, audit, clock, log: silentLogger, clients: [ADMIN], endpointUrl: ADMIN_URL });
  const call = async (action: AdminAction, token: string, fields?: Record<string, unknown>) =>
    endpoint.handle(action, async () => ({ authorization: `Bearer ${token}`, ...(fields ? { fields } : {}) }), randomUUID()).then(
      (answer) => ({ answer, error: undefined }),
      (error: unknown) => ({ answer: undefined, error: error as OAuthError }),
    );
  return { authenticator, store, killSwitch, audit, call };
}

const victim = { kind: 'client', value: 'ci-runner' };
const create = { ...victim, expiresInSeconds: 600, reason: 'leaked key' };
const inAnHour = () => new Date(Date.now() + 3_600_000);

describe('admin API: assertion audience', () => {
  it('refuses an assertion made for the token endpoint, which stays good at /token', async () => {
    const { call, authenticator, killSwitch, audit } = setUp();
    const forToken = await assertion(TOKEN_ENDPOINT);
    const { error } = await call('revocation.create', forToken, create);
    expect(error?.status).toBe(401);
    expect(error?.code).toBe('invalid_client');
    expect(error?.description).toBe('client authentication failed');
    expect(await killSwitch.list()).toEqual([]);
    expect(audit.inner.admin.map((record) => [record.decision, record.reason])).toEqual([['deny', expect.stringMatching(/^client_auth: .*\baud/)]]);
    // Refused before its jti was spent, and /token behaves as before.
    const request = tokenRequestFrom(new Map([['client_assertion_type', [CLIENT_ASSERTION_TYPE_JWT_BEARER]], ['client_assertion', [forToken]]]));
    await expect(authenticator.authenticate(request)).resolves.toMatchObject({ id: ADMIN, authMethod: 'private_key_jwt' });
  });

  it('accepts the admin URL or the issuer as aud, but not the admin URL at /token', async () => {
    const { call, authenticator } = setUp();
    expect((await call('revocation.list', await assertion(ADMIN_URL))).error).toBeUndefined();
    expect((await call('revocation.list', await assertion(ISSUER))).error).toBeUndefined();
    expect((await call('revocation.list', await assertion([ADMIN_URL, TOKEN_ENDPOINT]))).error?.code).toBe('invalid_client');
    const request = tokenRequestFrom(new Map([['client_assertion_type', [CLIENT_ASSERTION_TYPE_JWT_BEARER]], ['client_assertion', [await assertion(ADMIN_URL)]]]));
    await expect(authenticator.authenticate(request)).rejects.toMatchObject({ code: 'invalid_client' });
  });

  it('accepts the issuer only under assertionAudience: issuer', async () => {
    const { call } = setUp({ assertionAudience: 'issuer' });
    expect((await call('revocation.list', await assertion(ADMIN_URL))).error?.code).toBe('invalid_client');
    expect((await call('revocation.list', await assertion(ISSUER))).error).toBeUndefined();
  });
});

describe('admin API: a kill-switched admin client', () => {
  it('is refused, and cannot remove its own entry', async () => {
    const { call, killSwitch, audit } = setUp();
    await killSwitch.add({ kind: 'client', value: ADMIN }, { expiresAt: inAnHour(), createdBy: 'cli' });
    const { error, answer } = await call('revocation.delete', await assertion(ISSUER), { kind: 'client', value: ADMIN });
    expect(answer).toBeUndefined();
    expect(error?.status).toBe(401);
    expect(error?.code).toBe('invalid_client');
    expect(error?.description).toBe('client authentication failed');
    expect(error?.description).not.toContain(ADMIN);
    expect((await killSwitch.list()).map((entry) => entry.value)).toEqual([ADMIN]);
    expect(audit.inner.admin).toEqual([expect.objectContaining({ action: 'revocation.delete', decision: 'deny', error: 'invalid_client', reason: 'admin: kill switch: client entry', client: { id: ADMIN, authMethod: 'private_key_jwt' } })]);
  });

  it('gets 503 when the kill switch cannot be read, never a pass', async () => {
    const { call, store, killSwitch } = setUp();
    store.failing.add('getMany');
    const { error } = await call('revocation.create', await assertion(ISSUER), create);
    expect(error?.status).toBe(503);
    expect(error?.code).toBe('temporarily_unavailable');
    store.failing.clear();
    expect(await killSwitch.list()).toEqual([]);
  });
});

describe('admin API: every change is on record', () => {
  it('records a change before making it: a failing audit sink means 503 and no change', async () => {
    const { call, audit, killSwitch } = setUp();
    audit.failing = true;
    const created = await call('revocation.create', await assertion(ISSUER), create);
    expect(created.error?.status).toBe(503);
    expect(created.error?.code).toBe('temporarily_unavailable');
    expect(await killSwitch.list()).toEqual([]);

    await killSwitch.add({ kind: 'client', value: 'ci-runner' }, { expiresAt: inAnHour() });
    const removed = await call('revocation.delete', await assertion(ISSUER), victim);
    expect(removed.error?.status).toBe(503);
    expect((await killSwitch.list()).map((entry) => entry.value)).toEqual(['ci-runner']);
    expect(audit.inner.admin).toEqual([]);
  });

  it('writes one allow record for a change that succeeds, made before the change', async () => {
    const { call, audit, killSwitch } = setUp();
    const created = await call('revocation.create', await assertion(ISSUER), create);
    expect(created.error).toBeUndefined();
    expect(await killSwitch.has({ kind: 'client', value: 'ci-runner' })).toBe(true);
    const removed = await call('revocation.delete', await assertion(ISSUER), victim);
    expect(removed.answer).toEqual({ removed: true });
    const missing = await call('revocation.delete', await assertion(ISSUER), victim);
    expect(missing.answer).toEqual({ removed: false });
    expect(audit.inner.admin.map((record) => [record.action, record.decision, record.found, record.outcome])).toEqual([
      ['revocation.create', 'allow', undefined, undefined],
      ['revocation.delete', 'allow', true, undefined],
      ['revocation.delete', 'allow', false, undefined],
    ]);
    expect(audit.inner.admin[0]!.entry).toMatchObject({ kind: 'client', value: 'ci-runner', reason: 'leaked key', expiresAt: expect.any(String) });
  });

  it('follows a recorded change that the store did not confirm with an outcome: failed record', async () => {
    const { call, audit, store, killSwitch } = setUp();
    store.failing.add('put');
    const created = await call('revocation.create', await assertion(ISSUER), create);
    expect(created.error?.status).toBe(503);
    store.failing.clear();
    await killSwitch.add({ kind: 'client', value: 'ci-runner' }, { expiresAt: inAnHour() });
    store.failing.add('delete');
    const removed = await call('revocation.delete', await assertion(ISSUER), victim);
    expect(removed.error?.status).toBe(503);
    expect(audit.inner.admin.map((record) => [record.action, record.decision, record.error, record.outcome])).toEqual([
      ['revocation.create', 'allow', undefined, undefined],
      ['revocation.create', 'deny', 'temporarily_unavailable', 'failed'],
      ['revocation.delete', 'allow', undefined, undefined],
      ['revocation.delete', 'deny', 'temporarily_unavailable', 'failed'],
    ]);
    const [intent, followUp] = audit.inner.admin;
    expect(followUp!.requestId).toBe(intent!.requestId);
    expect(followUp!.entry).toEqual(intent!.entry);
  });
});
