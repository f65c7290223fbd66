import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SPIRE_BIN, spireRequired, spireUnavailableReason, startSpire, type Spire } from '../src/spire.js';

const unavailable = spireUnavailableReason();

describe('SPIRE harness', () => {
  let spire: Spire | undefined;
  let other: Spire | undefined;

  beforeAll(async () => {
    if (unavailable) return;
    // Two at once, as when vitest runs SPIRE test files in parallel.
    [spire, other] = await Promise.all([startSpire(), startSpire({ trustDomain: 'other.test' })]);
  }, 120_000);

  afterAll(async () => {
    await Promise.all([spire?.stop(), other?.stop()]);
  }, 30_000);

  // Each test fails rather than the suite, so CI's test count shows it.
  beforeEach((ctx) => {
    if (unavailable && spireRequired()) throw new Error(`TESSERA_REQUIRE_SPIRE=1 but ${unavailable}`);
    if (unavailable) ctx.skip(unavailable);
  });

  it('serves this process its broker identity over the Workload API', async () => {
    const { stdout } = await promisify(execFile)(join(SPIRE_BIN, 'spire-agent'), [
      'api', 'fetch', 'jwt', '-audience', 'test', '-socketPath', spire!.workloadSocket,
    ]);
    const token = /token\(spiffe:\/\/example\.org\/tessera\):\s+(\S+)/.exec(stdout)?.[1];
    expect(token, stdout).toBeDefined();

    // SPIRE's default JWT key type is ec-p256.
    expect(decodeProtectedHeader(token!)).toMatchObject({ alg: 'ES256', typ: 'JWT' });
    const { payload } = await jwtVerify(token!, createLocalJWKSet(await spire!.bundleJwks()), {
      algorithms: ['ES256'],
      audience: 'test',
    });
    expect(payload.sub).toBe('spiffe://example.org/tessera');
  });

  it('runs instances side by side without sharing anything', async () => {
    expect(other!.dir).not.toBe(spire!.dir);
    const token = await other!.fetchJwtSvid('test');
    const { payload } = await jwtVerify(token, createLocalJWKSet(await other!.bundleJwks()), { audience: 'test' });
    expect(payload.sub).toBe('spiffe://other.test/tessera');
    // Each server has its own signing keys.
    await expect(jwtVerify(token, createLocalJWKSet(await spire!.bundleJwks()))).rejects.toThrow();
  });

  it('registers entries that the agent then serves', async () => {
    const id = 'spiffe://example.org/tessera/extra';
    await expect(spire!.createEntry(id, [`unix:uid:${process.getuid!()}`])).resolves.toMatch(/\S/);
    await spire!.waitForEntry(id);
    const token = await spire!.fetchJwtSvid('extra', { spiffeId: id });
    const { payload } = await jwtVerify(token, createLocalJWKSet(await spire!.bundleJwks()));
    expect(payload).toMatchObject({ sub: id, aud: ['extra'] });
  }, 40_000);

  it('serves a workload entry only to a client with its uid', async (ctx) => {
    if (process.getuid!() !== 0) ctx.skip('posing as another uid needs root');
    const id = 'spiffe://example.org/workload';
    await spire!.createEntry(id, ['unix:uid:1002']);
    await spire!.waitForEntry(id, { as: { uid: 1002, gid: 1002 } });
    const token = await spire!.fetchJwtSvid('api', { spiffeId: id, as: { uid: 1002, gid: 1002 } });
    expect((await jwtVerify(token, createLocalJWKSet(await spire!.bundleJwks()))).payload.sub).toBe(id);
    await expect(spire!.fetchJwtSvid('api', { spiffeId: id })).rejects.toThrow();
  }, 40_000);

  it('exposes a full SPIFFE bundle with JWT and X.509 keys', async () => {
    const bundle = await spire!.jwtBundle();
    expect(bundle.keys.some((key) => key.use === 'jwt-svid' && key.kid)).toBe(true);
    expect(bundle.keys.some((key) => key.use === 'x509-svid')).toBe(true);
    expect((await spire!.bundleJwks()).keys.every((key) => key.use === undefined && key.kid)).toBe(true);
  });
});
