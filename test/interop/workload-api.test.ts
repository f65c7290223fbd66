import { createPrivateKey, X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { DelegatedIdentityClient, WorkloadApiClient, WorkloadApiError, type JwtBundle } from '@tessera/spiffe';
import { spireRequired, spireUnavailableReason, startSpire, type Spire } from '../src/spire.js';

const unavailable = spireUnavailableReason();

/** @tessera/spiffe's clients against a real SPIRE agent: the same calls the broker makes in production. */
describe('Workload API and Delegated Identity clients against SPIRE', () => {
  let spire: Spire;
  let workload: WorkloadApiClient;
  let admin: DelegatedIdentityClient;

  beforeAll(async () => {
    if (unavailable) return;
    spire = await startSpire();
    workload = new WorkloadApiClient(`unix://${spire.workloadSocket}`);
    admin = new DelegatedIdentityClient(`unix://${spire.adminSocket}`);
  }, 180_000);
  afterAll(async () => {
    workload?.close();
    admin?.close();
    await spire?.stop();
  }, 60_000);
  beforeEach((ctx) => {
    if (unavailable && spireRequired()) throw new Error(`TESSERA_REQUIRE_SPIRE=1 but ${unavailable}`);
    if (unavailable) ctx.skip(unavailable);
  });

  it('fetches this workload’s JWT-SVID, which ValidateJWTSVID and the bundle both accept', async () => {
    const [svid] = await workload.fetchJwtSvid({ audience: ['https://broker.example.test'] });
    expect(svid!.spiffeId).toBe(spire.brokerId);
    expect(svid!.expiresAt.getTime()).toBeGreaterThan(Date.now());
    const validated = await workload.validateJwtSvid(svid!.token, 'https://broker.example.test');
    expect(validated.spiffeId).toBe(spire.brokerId);
    expect(validated.claims).toMatchObject({ sub: spire.brokerId, aud: ['https://broker.example.test'] });
    await jwtVerify(svid!.token, createLocalJWKSet(await spire.bundleJwks()), { audience: 'https://broker.example.test' });
    // The agent refuses a token for another audience: the error names the failure, not the token.
    const refused = await workload.validateJwtSvid(svid!.token, 'https://elsewhere.example.test').catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(WorkloadApiError);
    expect(JSON.stringify(refused) + String(refused)).not.toContain(svid!.token.split('.')[2]!.slice(0, 16));
  });

  it('fetches an X.509-SVID whose key matches its leaf and whose chain ends at the bundle', async () => {
    const context = await workload.fetchX509Svid();
    const [svid] = context.svids;
    expect(svid!.spiffeId).toBe(spire.brokerId);
    const leaf = new X509Certificate(svid!.certChainDer[0]!);
    expect(leaf.subjectAltName).toContain(`URI:${spire.brokerId}`);
    expect(leaf.checkPrivateKey(createPrivateKey({ key: svid!.keyPkcs8Der, format: 'der', type: 'pkcs8' }))).toBe(true);
    const authorities = svid!.bundleDer.map((der) => new X509Certificate(der));
    const issuer = [...svid!.certChainDer.slice(1).map((der) => new X509Certificate(der)), ...authorities];
    expect(issuer.some((candidate) => leaf.verify(candidate.publicKey))).toBe(true);
  });

  it('streams the JWT bundles, from the Workload API and from the admin API', async () => {
    const first = (subscribe: (onUpdate: (bundles: Map<string, JwtBundle>) => void) => { close(): void }) =>
      new Promise<Map<string, JwtBundle>>((resolve) => {
        const watcher = subscribe((bundles) => {
          watcher.close();
          resolve(bundles);
        });
      });
    const expectedKids = (await spire.bundleJwks()).keys.map((key) => key.kid).sort();
    for (const bundles of [await first((cb) => workload.watchJwtBundles(cb)), await first((cb) => admin.subscribeToJwtBundles(cb))]) {
      expect([...bundles.keys()]).toEqual(['example.org']);
      expect(bundles.get('example.org')!.keys.map((key) => key.kid).sort()).toEqual(expectedKids);
    }
  });
});
