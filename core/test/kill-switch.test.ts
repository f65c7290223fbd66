import { describe, expect, it } from 'vitest';
import type { StateStore } from '../src/state/store.js';
import { MemoryStateStore } from '../src/state/memory-store.js';
import { KillSwitch, KillSwitchQuery, killSwitchTargetProblem } from '../src/state/kill-switch.js';

let t = Date.parse('2030-01-01T00:00:00Z');
const clock = { now: () => new Date(t) };
const inAnHour = () => new Date(t + 3_600_000);

/** Counts the store's round trips: a check must be one `getMany`, however many identities a request holds. */
function counting(store: StateStore): StateStore & { reads: number } {
  const counted: StateStore & { reads: number } = {
    kind: store.kind,
    reads: 0,
    claimOnce: (key, ttlMs) => store.claimOnce(key, ttlMs),
    put: (key, value, ttlMs) => store.put(key, value, ttlMs),
    getMany: (keys) => {
      counted.reads++;
      return store.getMany(keys);
    },
    list: (prefix) => store.list(prefix),
    delete: (key) => store.delete(key),
    hit: (key, windowMs) => store.hit(key, windowMs),
    ping: () => store.ping(),
    close: () => store.close(),
  };
  return counted;
}

async function openKillSwitch() {
  const store = counting(new MemoryStateStore(clock));
  return { store, killSwitch: new KillSwitch(store, clock) };
}

describe('KillSwitch', () => {
  it('revokes a SPIFFE ID prefix on path-segment boundaries only', async () => {
    const { killSwitch } = await openKillSwitch();
    await killSwitch.add({ kind: 'spiffe-prefix', value: 'spiffe://example.org/ns/a' }, { expiresAt: inAnHour() });
    const matches = async (id: string) => (await killSwitch.match(new KillSwitchQuery().spiffeId(id)))?.kind;
    expect(await matches('spiffe://example.org/ns/a')).toBe('spiffe-prefix');
    expect(await matches('spiffe://example.org/ns/a/b/c')).toBe('spiffe-prefix');
    expect(await matches('spiffe://EXAMPLE.org/ns/a/b')).toBe('spiffe-prefix');
    expect(await matches('spiffe://example.org/ns/a/')).toBe('spiffe-prefix');
    expect(await matches('spiffe://example.org/ns/ab')).toBeUndefined();
    expect(await matches('spiffe://example.org/ns')).toBeUndefined();
    expect(await matches('spiffe://example.org/NS/a')).toBeUndefined();
    expect(await matches('spiffe://example.org.evil/ns/a')).toBeUndefined();
  });

  it('revokes a whole trust domain', async () => {
    const { killSwitch } = await openKillSwitch();
    await killSwitch.add({ kind: 'spiffe-prefix', value: 'spiffe://example.org' }, { expiresAt: inAnHour() });
    expect(await killSwitch.match(new KillSwitchQuery().client('spiffe://example.org/ci/runner'))).toEqual({ kind: 'spiffe-prefix' });
    expect(await killSwitch.match(new KillSwitchQuery().client('spiffe://example.org.other/x'))).toBeUndefined();
  });

  it('scopes a subject entry to an issuer when it names one, and to every issuer when not', async () => {
    const { killSwitch } = await openKillSwitch();
    await killSwitch.add({ kind: 'subject', value: 'alice', issuer: 'https://idp-a.example' }, { expiresAt: inAnHour() });
    await killSwitch.add({ kind: 'subject', value: 'bob' }, { expiresAt: inAnHour() });
    const subject = (sub: string, iss: string) => killSwitch.match(new KillSwitchQuery().subject(sub, iss));
    expect(await subject('alice', 'https://idp-a.example')).toEqual({ kind: 'subject' });
    expect(await subject('alice', 'https://idp-b.example')).toBeUndefined();
    expect(await subject('bob', 'https://idp-b.example')).toEqual({ kind: 'subject' });
    expect(await subject('bobby', 'https://idp-b.example')).toBeUndefined();
  });

  it('revokes every subject of an issuer, and a client', async () => {
    const { killSwitch } = await openKillSwitch();
    await killSwitch.add({ kind: 'issuer', value: 'https://idp-a.example' }, { expiresAt: inAnHour() });
    await killSwitch.add({ kind: 'client', value: 'ci-client' }, { expiresAt: inAnHour() });
    expect(await killSwitch.match(new KillSwitchQuery().subject('anyone', 'https://idp-a.example'))).toEqual({ kind: 'issuer' });
    expect(await killSwitch.match(new KillSwitchQuery().client('ci-client'))).toEqual({ kind: 'client' });
    expect(await killSwitch.match(new KillSwitchQuery().client('ci-client-2').subject('x', 'https://idp-b.example'))).toBeUndefined();
  });

  it('checks a broker token by jti, subject, client_id and every member of its act chain, in one round trip', async () => {
    const { killSwitch, store } = await openKillSwitch();
    const claims = {
      iss: 'https://broker.example',
      sub: 'alice',
      jti: 'token-1',
      client_id: 'mcp-server',
      act: { sub: 'spiffe://example.org/agent/planner', act: { sub: 'spiffe://example.org/agent/retriever', iss: 'spiffe://example.org' } },
    };
    expect(await killSwitch.match(new KillSwitchQuery().ownTokenClaims(claims))).toBeUndefined();
    expect(store.reads).toBe(1);
    for (const [kind, value] of [
      ['jti', 'token-1'],
      ['client', 'mcp-server'],
      ['spiffe-prefix', 'spiffe://example.org/agent/retriever'],
    ] as const) {
      const { killSwitch: fresh } = await openKillSwitch();
      await fresh.add({ kind, value }, { expiresAt: inAnHour() });
      expect(await fresh.match(new KillSwitchQuery().ownTokenClaims(claims))).toEqual({ kind });
    }
  });

  it('lists entries with their expiry and reason, removes them, and lets them expire', async () => {
    const { killSwitch } = await openKillSwitch();
    const entry = await killSwitch.add({ kind: 'client', value: 'c' }, { expiresAt: inAnHour(), reason: 'key leaked', createdBy: 'cli' });
    expect(await killSwitch.list()).toEqual([entry]);
    expect(entry).toMatchObject({ kind: 'client', value: 'c', reason: 'key leaked', createdBy: 'cli' });
    await expect(killSwitch.remove({ kind: 'client', value: 'c' })).resolves.toBe(true);
    await expect(killSwitch.remove({ kind: 'client', value: 'c' })).resolves.toBe(false);
    await killSwitch.add({ kind: 'client', value: 'c' }, { expiresAt: new Date(t + 1_000) });
    t += 1_000;
    expect(await killSwitch.list()).toEqual([]);
    expect(await killSwitch.match(new KillSwitchQuery().client('c'))).toBeUndefined();
  });

  it('refuses entries that never expire, already expired, or name nothing valid', async () => {
    const { killSwitch } = await openKillSwitch();
    await expect(killSwitch.add({ kind: 'client', value: 'c' }, { expiresAt: new Date(t) })).rejects.toThrow(RangeError);
    await expect(killSwitch.add({ kind: 'client', value: 'c' }, { expiresAt: new Date(t + 400 * 86_400_000) })).rejects.toThrow(RangeError);
    expect(killSwitchTargetProblem({ kind: 'spiffe-prefix', value: 'spiffe://example.org/ns/' })).toBeDefined();
    expect(killSwitchTargetProblem({ kind: 'spiffe-prefix', value: 'spiffe://example.org/*' })).toBeDefined();
    expect(killSwitchTargetProblem({ kind: 'spiffe-prefix', value: 'https://example.org/ns' })).toBeDefined();
    expect(killSwitchTargetProblem({ kind: 'client', value: 'c', issuer: 'https://idp' })).toBeDefined();
    expect(killSwitchTargetProblem({ kind: 'subject', value: '' })).toBeDefined();
    expect(killSwitchTargetProblem({ kind: 'subject', value: 'alice', issuer: 'https://idp' })).toBeUndefined();
  });
});
