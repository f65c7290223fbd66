import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { InvalidToken, TemporarilyUnavailable } from '@tessera/plugin-sdk';
import { LoopbackIssuer, startLoopbackServer, type LoopbackServer } from '@tessera/plugin-testkit';
import type { ContractBroker } from '@tessera/plugin-testkit/contract';
import { LEGACY_IDENTITY_LIFETIME_SECONDS } from '../src/index.js';
import { exchange, expectRefusedExchange, expectValidatorRefusal, rejection, startBroker, validate } from './broker.js';
import { FakeKubeApiServer } from './fake-kube-apiserver.js';
import { mintLegacy, mintProjected, projectedClaims, workload, writeKubeconfig } from './fixtures.js';

interface FakeCluster {
  readonly issuer: LoopbackIssuer;
  readonly api: FakeKubeApiServer;
  readonly kubeconfig: string;
  close(): Promise<void>;
}

/** A cluster: its issuer (signing key), its API server, and a kubeconfig holding the broker's credentials for it. */
async function fakeCluster(path: string): Promise<FakeCluster> {
  const issuer = await LoopbackIssuer.start({ path, alg: 'RS256' });
  const reviewerToken = randomUUID();
  const api = await FakeKubeApiServer.start({ issuer: issuer.issuer, keys: () => [issuer.key.publicJwk], reviewerToken });
  const kubeconfig = await writeKubeconfig({ server: api.url, token: reviewerToken });
  return {
    issuer,
    api,
    kubeconfig: kubeconfig.path,
    close: async () => {
      await api.close();
      await issuer.close();
      await kubeconfig.remove();
    },
  };
}

describe('tokenReview mode', () => {
  let east: FakeCluster;
  let west: FakeCluster;
  let running: ContractBroker;

  beforeAll(async () => {
    east = await fakeCluster('/east');
    west = await fakeCluster('/west');
    running = await startBroker({
      clusters: [
        { name: 'east', mode: 'tokenReview', issuer: east.issuer.issuer, kubeconfig: east.kubeconfig },
        { name: 'west', mode: 'tokenReview', issuer: west.issuer.issuer, kubeconfig: west.kubeconfig, timeoutMs: 1_000 },
      ],
    });
  });
  afterEach(() => {
    for (const cluster of [east, west]) {
      cluster.api.mode = 'up';
      cluster.api.redirectTo = undefined;
      cluster.api.rewriteStatus = undefined;
      cluster.api.deleted.clear();
    }
  });
  afterAll(async () => {
    await running?.close();
    await east?.close();
    await west?.close();
  });

  const refusedWith = (token: string, reason: string, detail?: string) => expectValidatorRefusal(running, token, reason, detail);

  it('asks the API server with the broker audiences and maps status.user', async () => {
    const who = workload({ namespace: 'payments', serviceAccount: 'api' });
    const token = await mintProjected(east.issuer, running.issuer, who);
    const before = east.api.reviews.length;
    const identity = await validate(running, token);
    expect(east.api.reviews.slice(before)).toEqual([{ token, audiences: [running.issuer, running.tokenEndpoint] }]);
    expect(identity.issuer).toBe('k8s:east');
    expect(identity.subject).toBe('system:serviceaccount:payments:api');
    expect(identity.audiences).toEqual([running.issuer]);
    expect(identity.expiresAt.getTime()).toBe((identity.claims.exp as number) * 1000);
    expect(identity.attributes).toEqual({
      'k8s.cluster': 'east',
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

  it('sends a token only to the API server of the cluster that issued it', async () => {
    const eastBefore = east.api.reviews.length;
    const westBefore = west.api.reviews.length;
    await validate(running, await mintProjected(west.issuer, running.issuer));
    expect(west.api.reviews.length).toBe(westBefore + 1);
    expect(east.api.reviews.length).toBe(eastBefore);
    // Naming west but signed with east's key: west's API server refuses it; east never sees it.
    await refusedWith(await mintProjected(west.issuer, running.issuer, workload(), { key: east.issuer.key }), 'signature');
    expect(east.api.reviews.length).toBe(eastBefore);
    // An unknown issuer goes nowhere.
    const stranger = await LoopbackIssuer.start({ path: '/east', alg: 'RS256' });
    try {
      await refusedWith(await mintProjected(stranger, running.issuer), 'untrusted_issuer');
    } finally {
      await stranger.close();
    }
    expect(east.api.reviews.length).toBe(eastBefore);
    // The valid token, then the forged one twice (called directly, then through the broker).
    expect(west.api.reviews.length).toBe(westBefore + 3);
  });

  it('refuses with 400 when the API server does not authenticate the token (pod deleted)', async () => {
    const who = workload();
    const token = await mintProjected(east.issuer, running.issuer, who);
    east.api.deleted.add(who.pod!.uid);
    await refusedWith(token, 'claims', 'bound object gone');
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', error: 'invalid_request', reason: 'subject: claims: tokenreview: bound object gone' });
  });

  it('refuses audiences that do not name the broker, before and after the review', async () => {
    const before = east.api.reviews.length;
    // Not for us: refused without handing the token to anyone.
    await refusedWith(await mintProjected(east.issuer, 'https://vault.example.test'), 'audience');
    await refusedWith(await mintProjected(east.issuer, east.issuer.issuer), 'audience');
    expect(east.api.reviews.length).toBe(before);
    // An audience-unaware API server answers authenticated with no audiences: that means "valid for the API server".
    east.api.rewriteStatus = (status) => ({ ...status, audiences: [] });
    await refusedWith(await mintProjected(east.issuer, running.issuer), 'audience', 'tokenreview audiences');
    east.api.rewriteStatus = (status) => ({ ...status, audiences: [`${running.issuer}/`] });
    await refusedWith(await mintProjected(east.issuer, running.issuer), 'audience');
  });

  it('accepts only service accounts, and only the one the token names', async () => {
    east.api.rewriteStatus = (status) => ({ ...status, user: { username: 'alice@example.com', uid: '42', groups: ['system:authenticated'] } });
    await refusedWith(await mintProjected(east.issuer, running.issuer), 'claims', 'not a service account');
    east.api.rewriteStatus = (status) => ({ ...status, user: { username: 'system:serviceaccount:kube-system:admin', uid: '42' } });
    await refusedWith(await mintProjected(east.issuer, running.issuer), 'claims', 'sub does not match');
  });

  it('refuses, without asking, tokens that cannot pass: expired, no exp, symmetric alg', async () => {
    const before = east.api.reviews.length;
    await refusedWith(await mintProjected(east.issuer, running.issuer, workload(), { expiresIn: -600 }), 'expired');
    await refusedWith(await east.issuer.mint({ sub: 'system:serviceaccount:payments:api', aud: [running.issuer] }, { noExp: true }), 'claims', 'exp');
    const hmac = await new SignJWT({ ...projectedClaims(running.issuer), iss: east.issuer.issuer, exp: Math.floor(Date.now() / 1000) + 600 })
      .setProtectedHeader({ alg: 'HS256' })
      .sign(new TextEncoder().encode('the-cluster-public-key-as-a-secret'));
    await refusedWith(hmac, 'algorithm');
    expect(east.api.reviews.length).toBe(before);
  });

  it('answers 503 with Retry-After when the API server is down, forbidden or unreachable', async () => {
    const token = await mintProjected(east.issuer, running.issuer);
    east.api.mode = 'down';
    expect(await rejection(validate(running, token))).toBeInstanceOf(TemporarilyUnavailable);
    const response = await exchange(running, token);
    expectRefusedExchange(response, token, 503, 'temporarily_unavailable');
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', error: 'temporarily_unavailable' });

    east.api.mode = 'forbidden';
    expectRefusedExchange(await exchange(running, token), token, 503, 'temporarily_unavailable');

    const closed = await fakeCluster('/gone');
    const gone = await startBroker({ clusters: [{ name: 'gone', mode: 'tokenReview', issuer: closed.issuer.issuer, kubeconfig: closed.kubeconfig }] });
    try {
      await closed.api.close();
      const orphan = await mintProjected(closed.issuer, gone.issuer);
      expect(await rejection(validate(gone, orphan))).toBeInstanceOf(TemporarilyUnavailable);
      expectRefusedExchange(await exchange(gone, orphan), orphan, 503, 'temporarily_unavailable');
    } finally {
      await gone.close();
      await closed.close();
    }
  });

  it('stops waiting at its timeout when the API server hangs', async () => {
    const restore = west.api.stall();
    try {
      const started = Date.now();
      expect(await rejection(validate(running, await mintProjected(west.issuer, running.issuer)))).toBeInstanceOf(TemporarilyUnavailable);
      expect(Date.now() - started).toBeLessThan(2_500);
    } finally {
      restore();
    }
  });

  it('never follows a redirect: the token would go to another host', async () => {
    const received: string[] = [];
    let elsewhere: LoopbackServer | undefined;
    elsewhere = await startLoopbackServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        received.push(Buffer.concat(chunks).toString());
        response.writeHead(201, { 'content-type': 'application/json' }).end('{"status":{"authenticated":true}}');
      });
    });
    try {
      east.api.redirectTo = `${elsewhere.url}/apis/authentication.k8s.io/v1/tokenreviews`;
      const token = await mintProjected(east.issuer, running.issuer);
      expect(await rejection(validate(running, token))).toBeInstanceOf(TemporarilyUnavailable);
      expectRefusedExchange(await exchange(running, token), token, 503, 'temporarily_unavailable');
      expect(received).toEqual([]);
    } finally {
      await elsewhere.close();
    }
  });
});

describe('tokenReview mode and legacy tokens', () => {
  let cluster: FakeCluster;
  let strict: ContractBroker;
  let lenient: ContractBroker;

  beforeAll(async () => {
    cluster = await fakeCluster('/legacy');
    const entry = { name: 'legacy', mode: 'tokenReview', issuer: cluster.issuer.issuer, kubeconfig: cluster.kubeconfig };
    strict = await startBroker({ clusters: [entry] });
    lenient = await startBroker({ clusters: [{ ...entry, allowLegacyTokens: true }] });
  });
  afterAll(async () => {
    await strict?.close();
    await lenient?.close();
    await cluster?.close();
  });

  it('refuses legacy tokens by default, without sending them anywhere', async () => {
    const before = cluster.api.reviews.length;
    const token = await mintLegacy(cluster.issuer.key);
    const error = await rejection(validate(strict, token));
    expect(error).toBeInstanceOf(InvalidToken);
    expect((error as InvalidToken).detail).toBe('claims: legacy service-account token (no exp, no aud)');
    expectRefusedExchange(await exchange(strict, token), token, 400, 'invalid_request');
    expect(cluster.api.reviews.length).toBe(before);
  });

  it('accepts them with allowLegacyTokens, reviewed against the API server audiences, with a short identity', async () => {
    const who = workload({ namespace: 'ci', serviceAccount: 'builder' });
    const token = await mintLegacy(cluster.issuer.key, who);
    const identity = await validate(lenient, token);
    expect(cluster.api.reviews.at(-1)).toEqual({ token });
    expect(identity.issuer).toBe('k8s:legacy');
    expect(identity.subject).toBe('system:serviceaccount:ci:builder');
    expect(identity.audiences).toEqual([cluster.issuer.issuer]);
    expect(Math.abs(identity.expiresAt.getTime() - Date.now() - LEGACY_IDENTITY_LIFETIME_SECONDS * 1000)).toBeLessThan(5_000);
    expect(identity.attributes).toEqual({ 'k8s.cluster': 'legacy', 'k8s.namespace': 'ci', 'k8s.serviceAccount': 'builder', 'k8s.serviceAccountUid': who.serviceAccountUid });
    expect((await exchange(lenient, token)).status).toBe(200);
  });

  it('stops accepting a legacy token once its service account is deleted', async () => {
    const who = workload();
    const token = await mintLegacy(cluster.issuer.key, who);
    cluster.api.deleted.add(who.serviceAccountUid);
    expectRefusedExchange(await exchange(lenient, token), token, 400, 'invalid_request');
  });

  it('still refuses a legacy token another cluster signed', async () => {
    const other = await LoopbackIssuer.start({ alg: 'RS256' });
    try {
      const token = await mintLegacy(other.key);
      expect(((await rejection(validate(lenient, token))) as InvalidToken).reason).toBe('signature');
    } finally {
      await other.close();
    }
  });
});
