import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOKEN_TYPE_JWT } from '@tessera/plugin-sdk';
import { generateTestKey, LoopbackIssuer, type TestKey } from '@tessera/plugin-testkit';
import type { ContractBroker } from '@tessera/plugin-testkit/contract';
import { TOKEN_TYPE_KUBERNETES_SA } from '../src/index.js';
import { exchange, expectRefusedExchange, expectValidatorRefusal, rejection, startBroker, validate } from './broker.js';
import { mintLegacy, mintProjected, projectedClaims, workload } from './fixtures.js';

describe('offline mode, two clusters', () => {
  let clusterA: LoopbackIssuer;
  let clusterB: LoopbackIssuer;
  let running: ContractBroker;

  beforeAll(async () => {
    clusterA = await LoopbackIssuer.start({ path: '/cluster-a', alg: 'RS256' });
    clusterB = await LoopbackIssuer.start({ path: '/cluster-b', alg: 'RS256' });
    running = await startBroker({
      tokenTypes: [TOKEN_TYPE_KUBERNETES_SA, TOKEN_TYPE_JWT],
      clusters: [
        { name: 'cluster-a', mode: 'offline', issuer: clusterA.issuer, maxTokenLifetimeSeconds: 7_200 },
        { name: 'cluster-b', mode: 'offline', issuer: clusterB.issuer, jwksUri: clusterB.jwksUri },
      ],
    });
  });
  afterAll(async () => {
    await running?.close();
    await clusterA?.close();
    await clusterB?.close();
  });

  const refusedWith = (token: string, reason: string, detail?: string) => expectValidatorRefusal(running, token, reason, detail);

  it('maps the structured kubernetes.io claims to the identity and attributes', async () => {
    const who = workload({ namespace: 'payments', serviceAccount: 'api' });
    const token = await mintProjected(clusterA, running.issuer, who);
    const identity = await validate(running, token);
    expect(identity.issuer).toBe(clusterA.issuer);
    expect(identity.subject).toBe('system:serviceaccount:payments:api');
    expect(identity.audiences).toEqual([running.issuer]);
    expect(identity.attributes).toEqual({
      'k8s.cluster': 'cluster-a',
      'k8s.namespace': 'payments',
      'k8s.serviceAccount': 'api',
      'k8s.serviceAccountUid': who.serviceAccountUid,
      'k8s.pod': who.pod!.name,
      'k8s.podUid': who.pod!.uid,
      'k8s.node': who.node!.name,
      'k8s.nodeUid': who.node!.uid,
      'k8s.credentialId': `JTI=${identity.claims.jti as string}`,
    });
    expect((await exchange(running, token)).status).toBe(200);
  });

  it('leaves out pod and node when the token is bound to neither (kubectl create token)', async () => {
    const who = workload({ pod: undefined, node: undefined });
    const identity = await validate(running, await mintProjected(clusterA, running.tokenEndpoint, who));
    expect(Object.keys(identity.attributes).sort()).toEqual(['k8s.cluster', 'k8s.credentialId', 'k8s.namespace', 'k8s.serviceAccount', 'k8s.serviceAccountUid']);
  });

  it("never verifies one cluster's token with the other cluster's key", async () => {
    const identity = await validate(running, await mintProjected(clusterB, running.issuer));
    expect(identity.issuer).toBe(clusterB.issuer);
    expect(identity.attributes['k8s.cluster']).toBe('cluster-b');
    // Signed by A's key but naming B as issuer, and the reverse: each issuer's JWKS alone decides.
    await refusedWith(await mintProjected(clusterB, running.issuer, workload(), { key: clusterA.key }), 'unknown_key');
    await refusedWith(await mintProjected(clusterA, running.issuer, workload(), { key: clusterB.key }), 'unknown_key');
    // Even a key with the same kid in both sets: the signature must verify with the named issuer's key.
    const lookalike: TestKey = { ...(await generateTestKey('RS256')), kid: clusterB.key.kid };
    await refusedWith(await mintProjected(clusterB, running.issuer, workload(), { key: lookalike }), 'signature');
  });

  it('refuses legacy secret-based tokens, whoever signed them', async () => {
    await refusedWith(await mintLegacy(clusterA.key), 'claims', 'legacy service-account token');
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', reason: 'subject: claims: legacy service-account token (no exp, no aud)' });
  });

  it('refuses a token without exp even from a trusted cluster', async () => {
    const token = await clusterA.mint(projectedClaims(running.issuer), { noExp: true });
    await refusedWith(token, 'claims', 'exp');
  });

  it('refuses the auto-mounted token: API server audience, extended lifetime', async () => {
    await refusedWith(await mintProjected(clusterA, clusterA.issuer), 'audience');
    const extended = await mintProjected(clusterA, running.issuer, workload(), {
      extra: { 'kubernetes.io': { namespace: 'payments', serviceaccount: { name: 'api', uid: 'u' }, warnafter: Math.floor(Date.now() / 1000) + 3_600 } },
    });
    await refusedWith(extended, 'claims', 'warnafter');
  });

  it('refuses tokens that outlive maxTokenLifetimeSeconds', async () => {
    await refusedWith(await mintProjected(clusterA, running.issuer, workload(), { expiresIn: 3 * 3_600 }), 'lifetime');
  });

  it('takes the subject from kubernetes.io and refuses a sub that disagrees with it', async () => {
    await refusedWith(await mintProjected(clusterA, running.issuer, workload(), { extra: { sub: 'system:serviceaccount:kube-system:admin' } }), 'claims', 'sub does not match');
    await refusedWith(await mintProjected(clusterA, running.issuer, workload(), { extra: { 'kubernetes.io': undefined } }), 'claims', 'kubernetes.io claim missing');
    const odd = await mintProjected(clusterA, running.issuer, workload({ namespace: 'Payments Team' }));
    await refusedWith(odd, 'claims', 'kubernetes.io.namespace');
  });

  it('answers every token type it was configured with', async () => {
    const token = await mintProjected(clusterA, running.issuer);
    expect((await validate(running, token, TOKEN_TYPE_JWT)).tokenType).toBe(TOKEN_TYPE_JWT);
    expect((await exchange(running, token, { tokenType: TOKEN_TYPE_JWT })).status).toBe(200);
  });

  it('answers 503, not 400, while the cluster keys are unreachable', async () => {
    const dark = await LoopbackIssuer.start({ path: '/cluster-c', alg: 'RS256' });
    dark.available = false;
    const cold = await startBroker({ clusters: [{ name: 'cluster-c', mode: 'offline', issuer: dark.issuer }] });
    try {
      const token = await mintProjected(dark, cold.issuer);
      const response = await exchange(cold, token);
      expectRefusedExchange(response, token, 503, 'temporarily_unavailable');
    } finally {
      await cold.close();
      await dark.close();
    }
  });
});

describe('offline mode with a JWKS file', () => {
  let dir: string;
  let cluster: LoopbackIssuer;
  let running: ContractBroker;
  const writeJwks = async (...keys: TestKey[]) => {
    // Written beside and renamed into place, as a ConfigMap update or `kubectl get --raw ... > tmp && mv` would.
    await writeFile(join(dir, 'next.json'), JSON.stringify({ keys: keys.map((key) => key.publicJwk) }));
    await rename(join(dir, 'next.json'), join(dir, 'cluster-jwks.json'));
  };
  const eventually = async (check: () => Promise<boolean>) => {
    for (let attempt = 0; attempt < 100 && !(await check()); attempt++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await check()).toBe(true);
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tessera-k8s-jwks-'));
    // A private cluster: its issuer URL is not reachable from the broker at all.
    cluster = await LoopbackIssuer.start({ path: '/private', alg: 'ES256' });
    cluster.available = false;
    await writeJwks(cluster.key);
    running = await startBroker({ clusters: [{ name: 'private', mode: 'offline', issuer: cluster.issuer, jwksFile: join(dir, 'cluster-jwks.json') }] });
  });
  afterAll(async () => {
    await running?.close();
    await cluster?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('verifies with the file keys and never contacts the issuer', async () => {
    const identity = await validate(running, await mintProjected(cluster, running.issuer));
    expect(identity.attributes['k8s.cluster']).toBe('private');
    expect(cluster.discoveryFetches + cluster.jwksFetches).toBe(0);
  });

  it('picks up a rotated file and keeps the last good keys when the new file is broken', async () => {
    const old = cluster.key;
    const next = await cluster.rotate({ dropOld: true });
    const accepts = (key: TestKey) => async () => (await rejection(validate(running, await mintProjected(cluster, running.issuer, workload(), { key })))) === undefined;
    expect(await accepts(next)()).toBe(false);
    await writeJwks(next);
    await eventually(accepts(next));
    await eventually(async () => !(await accepts(old)()));

    await writeFile(join(dir, 'cluster-jwks.json'), '{"keys": [');
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await accepts(next)()).toBe(true);
  });
});
