import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import type { Clock } from '@tessera/plugin-sdk';
import { ConfigError } from '../src/config/errors.js';
import { generatePrivateJwk, loadSigningKeys, type SigningKey } from '../src/keys/key-ring.js';
import { RETIRED_KEY_SKEW_SECONDS, RotatingKeyRing } from '../src/keys/key-rotation.js';
import { silentLogger } from '../src/logging.js';

/** A clock the test moves by hand. */
class TestClock implements Clock {
  ms = Date.UTC(2026, 0, 1);
  now(): Date {
    return new Date(this.ms);
  }
  advance(seconds: number): void {
    this.ms += seconds * 1000;
  }
}

const AHEAD = 300;
const LIFETIME = 600;
const options = { publishAheadSeconds: AHEAD, maxTokenLifetimeSeconds: LIFETIME };

let dir: string;
let clock: TestClock;
let ring: RotatingKeyRing;
const keys: Record<string, SigningKey> = {};

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tessera-rotation-'));
  for (const kid of ['a', 'b', 'c']) {
    await writeFile(join(dir, `${kid}.jwk`), JSON.stringify({ ...(await generatePrivateJwk('ES256')), kid }));
    keys[kid] = (await loadSigningKeys({ algorithm: 'ES256', generate: false, files: [{ path: `${kid}.jwk` }] }, { baseDir: dir, dataDir: '.', log: silentLogger }))[0]!;
  }
  clock = new TestClock();
  ring = new RotatingKeyRing(clock, silentLogger);
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const use = (kid: string, role: SigningKey['use'] = 'sign'): SigningKey => ({ ...keys[kid]!, use: role });

async function apply(list: SigningKey[], settings = options): Promise<void> {
  ring.commit(await ring.plan(list, settings));
}

/** Signs a token that expires `lifetime` seconds from now; returns the kid in its header. */
async function signed(lifetime = LIFETIME): Promise<{ kid: string; token: string }> {
  const now = Math.floor(clock.ms / 1000);
  const { token } = await ring.sign({ sub: 's', iat: now, exp: now + lifetime }, { typ: 'at+jwt' });
  return { kid: decodeProtectedHeader(token).kid!, token };
}

const published = () => ring.publicJwks().keys.map((key) => key.kid);

describe('RotatingKeyRing', () => {
  it('signs with the configured key at once when the process starts', async () => {
    await apply([use('a'), use('b')]);
    expect((await signed()).kid).toBe('a');
    expect(published()).toEqual(['a', 'b']);
    expect(ring.maxAgeSeconds).toBe(AHEAD);
  });

  it('publishes a new signing key at once and signs with it only after publishAheadSeconds', async () => {
    await apply([use('a')]);
    await signed();
    clock.advance(10);
    await apply([use('b'), use('a', 'publish')]);
    expect(published()).toEqual(['b', 'a']);
    expect(ring.status()).toMatchObject({ signing: 'a', next: { kid: 'b', signsFrom: new Date(clock.ms + AHEAD * 1000) } });
    clock.advance(AHEAD - 1);
    expect((await signed()).kid).toBe('a');
    clock.advance(1);
    expect((await signed()).kid).toBe('b');
    expect(ring.status().next).toBeUndefined();
  });

  it('keeps a retired key published, and refuses a config without it, until its last token expires plus the skew', async () => {
    await apply([use('a')]);
    await apply([use('b'), use('a', 'publish')]);
    clock.advance(AHEAD - 5);
    // The last token of `a`, signed just before `b` takes over.
    const last = await signed(100);
    expect(last.kid).toBe('a');
    const lastExpiry = clock.ms + 100_000;
    clock.advance(5);
    expect((await signed()).kid).toBe('b');
    clock.ms = lastExpiry + RETIRED_KEY_SKEW_SECONDS * 1000 - 1;
    expect(published()).toEqual(['b', 'a']);
    // Verification accepts every published key, the retired one too.
    await expect(jwtVerify(last.token, ring.verifier(), { currentDate: new Date(lastExpiry - 1000) })).resolves.toBeDefined();
    const refused = await ring.plan([use('b')], options).catch((caught: unknown) => caught);
    expect(refused).toBeInstanceOf(ConfigError);
    const until = new Date(lastExpiry + RETIRED_KEY_SKEW_SECONDS * 1000).toISOString();
    expect((refused as ConfigError).problems).toEqual([
      `keys: key "a" signed tokens valid until ${until} (their expiry plus ${RETIRED_KEY_SKEW_SECONDS} s of clock skew): keep it in keys.files with use: publish until then`,
    ]);
    expect(published()).toEqual(['b', 'a']);
    clock.advance(0.001);
    await apply([use('b')]);
    expect(published()).toEqual(['b']);
    await expect(jwtVerify(last.token, ring.verifier(), { currentDate: new Date(lastExpiry - 1000) })).rejects.toThrow();
  });

  it('refuses, at plan and again at commit, a config that drops a key whose tokens may be presented', async () => {
    await apply([use('a'), use('b', 'publish')]);
    clock.advance(AHEAD);
    // Planned before `a` signed anything: `b` takes over at once, so dropping `a` is fine so far.
    const plan = await ring.plan([use('b')], options);
    // A token signed while the rest of the config was built.
    expect((await signed()).kid).toBe('a');
    expect(() => ring.commit(plan)).toThrow(ConfigError);
    expect(() => ring.commit(plan)).toThrow(/key "a" signed tokens valid until .*: keep it in keys.files with use: publish until then/);
    // Nothing changed.
    expect(ring.status()).toEqual({ signing: 'a', published: ['a', 'b'] });
    expect((await signed()).kid).toBe('a');
  });

  it('refuses a config that drops the key still signing until the new one takes over', async () => {
    await apply([use('a')]);
    const refused = await ring.plan([use('b')], options).catch((caught: unknown) => caught);
    expect(refused).toBeInstanceOf(ConfigError);
    const takesOver = new Date(clock.ms + AHEAD * 1000).toISOString();
    expect((refused as ConfigError).problems).toEqual([
      `keys: key "a" signs until "b" takes over at ${takesOver}: keep it in keys.files with use: publish until the tokens it signs have expired`,
    ]);
    // Kept with use: publish, the same rotation applies.
    await apply([use('b'), use('a', 'publish')]);
    expect(ring.status()).toMatchObject({ signing: 'a', next: { kid: 'b' }, published: ['b', 'a'] });
  });

  it('drops a removed key that never signed at once', async () => {
    await apply([use('a'), use('b', 'publish')]);
    expect(published()).toEqual(['a', 'b']);
    await apply([use('a')]);
    expect(published()).toEqual(['a']);
  });

  it('lets a key published long enough (use: publish) sign at once when promoted', async () => {
    await apply([use('a'), use('b', 'publish')]);
    await signed();
    clock.advance(AHEAD);
    await apply([use('b'), use('a', 'publish')]);
    expect((await signed()).kid).toBe('b');
  });

  it('counts a promoted key from when it was first published, not from the promotion', async () => {
    await apply([use('a'), use('b', 'publish')]);
    clock.advance(AHEAD - 60);
    await apply([use('b'), use('a', 'publish')]);
    expect(ring.status()).toMatchObject({ signing: 'a', next: { kid: 'b' } });
    clock.advance(60);
    expect((await signed()).kid).toBe('b');
  });

  it('keeps the old key signing when a reload drops the pending key again, and forgets the pending one', async () => {
    await apply([use('a')]);
    await apply([use('b'), use('a', 'publish')]);
    clock.advance(100);
    await apply([use('a')]);
    expect(ring.status()).toEqual({ signing: 'a', published: ['a'] });
    clock.advance(AHEAD);
    expect((await signed()).kid).toBe('a');
  });

  it('restarts the wait when the pending key is replaced by another', async () => {
    await apply([use('a')]);
    await apply([use('b'), use('a', 'publish')]);
    clock.advance(100);
    await apply([use('c'), use('a', 'publish')]);
    expect(published()).toEqual(['c', 'a']);
    clock.advance(AHEAD - 1);
    expect((await signed()).kid).toBe('a');
    clock.advance(1);
    expect((await signed()).kid).toBe('c');
  });

  it('waits for the longest max-age served so far when publishAheadSeconds is lowered with a rotation', async () => {
    await apply([use('a')]);
    await apply([use('b'), use('a', 'publish')], { ...options, publishAheadSeconds: 2 });
    clock.advance(2);
    expect((await signed()).kid).toBe('a');
    clock.advance(AHEAD - 2);
    expect((await signed()).kid).toBe('b');
    expect(ring.maxAgeSeconds).toBe(2);
  });

  it('changes nothing until a plan is committed', async () => {
    await apply([use('a')]);
    await ring.plan([use('b'), use('a', 'publish')], options);
    expect(published()).toEqual(['a']);
    clock.advance(AHEAD);
    expect((await signed()).kid).toBe('a');
  });

  it('counts the publish-ahead from the commit (when the key is published), not from the plan', async () => {
    await apply([use('a')]);
    const plan = await ring.plan([use('b'), use('a', 'publish')], options);
    // Building the rest of a config (plugins fetching keys) takes time between plan and commit.
    clock.advance(10);
    ring.commit(plan);
    expect(ring.status().next).toEqual({ kid: 'b', signsFrom: new Date(clock.ms + AHEAD * 1000) });
  });

  it('refuses a kid that would name another key while the first is published', async () => {
    await apply([use('a')]);
    const impostor: SigningKey = { ...keys.b!, kid: 'a', publicJwk: { ...keys.b!.publicJwk, kid: 'a' } };
    const error = await ring.plan([impostor], options).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems[0]).toMatch(/kid "a" names another key/);
  });

  it('refuses a config whose keys all have use publish', async () => {
    await expect(ring.plan([use('a', 'publish')], options)).rejects.toThrow(/one must sign/);
  });

  it('uses the longest token lifetime for a payload without exp', async () => {
    await apply([use('a')]);
    await ring.sign({ sub: 's' }, { typ: 'JWT' });
    await apply([use('b'), use('a', 'publish')]);
    clock.advance(AHEAD);
    clock.advance(LIFETIME + RETIRED_KEY_SKEW_SECONDS - AHEAD - 1);
    await expect(ring.plan([use('b')], options)).rejects.toThrow(/key "a" signed tokens valid until/);
    clock.advance(1);
    await apply([use('b')]);
    expect(published()).toEqual(['b']);
  });

  it('waits for the longest max-age still cached, though a reload without rotation lowered it in between', async () => {
    await apply([use('a')], { ...options, publishAheadSeconds: 3600 });
    clock.advance(10);
    // /keys was served with max-age=3600 until now; relying parties may hold it an hour from here.
    const lowered = clock.ms;
    await apply([use('a')], { ...options, publishAheadSeconds: 60 });
    expect(ring.maxAgeSeconds).toBe(60);
    clock.advance(120);
    await apply([use('b'), use('a', 'publish')], { ...options, publishAheadSeconds: 60 });
    expect(ring.status()).toMatchObject({ signing: 'a', next: { kid: 'b', signsFrom: new Date(lowered + 3600_000) } });
    clock.ms = lowered + 3600_000 - 1;
    expect((await signed()).kid).toBe('a');
    clock.advance(0.001);
    expect((await signed()).kid).toBe('b');
  });

  it('forgets a max-age once no copy served with it can still be cached', async () => {
    await apply([use('a')], { ...options, publishAheadSeconds: 3600 });
    await apply([use('a')], { ...options, publishAheadSeconds: 60 });
    clock.advance(3600);
    await apply([use('b'), use('a', 'publish')], { ...options, publishAheadSeconds: 60 });
    expect(ring.status().next).toEqual({ kid: 'b', signsFrom: new Date(clock.ms + 60_000) });
  });

  it('lets a staged key sign at once when every copy of /keys without it has expired, whatever max-age served it', async () => {
    await apply([use('a')], { ...options, publishAheadSeconds: 3600 });
    clock.advance(10);
    // Published from here, under max-age=3600: copies fetched before this point last until an hour on.
    await apply([use('a'), use('b', 'publish')], { ...options, publishAheadSeconds: 3600 });
    const staged = clock.ms;
    clock.advance(100);
    await apply([use('a'), use('b', 'publish')], { ...options, publishAheadSeconds: 60 });
    clock.ms = staged + 3600_000;
    await apply([use('b'), use('a', 'publish')], { ...options, publishAheadSeconds: 60 });
    expect((await signed()).kid).toBe('b');
  });
});
