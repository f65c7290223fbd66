import { randomUUID } from 'node:crypto';
import { LoopbackIssuer } from '@tessera/plugin-testkit';
import { describeValidatorContract } from '@tessera/plugin-testkit/contract';
import { TOKEN_TYPE_KUBERNETES_SA } from '../src/index.js';
import { FakeKubeApiServer } from './fake-kube-apiserver.js';
import { mintProjected, workload, writeKubeconfig } from './fixtures.js';

// TokenReview mode: the real @kubernetes/client-node, driven by a kubeconfig file, against a loopback
// API server that verifies the token itself with the cluster's key.
describeValidatorContract('@tessera/plugin-kubernetes (tokenReview)', async () => {
  const cluster = await LoopbackIssuer.start({ path: '/cluster-b', alg: 'RS256' });
  const stranger = await LoopbackIssuer.start({ path: '/cluster-b', alg: 'RS256' });
  const reviewerToken = randomUUID();
  const api = await FakeKubeApiServer.start({ issuer: cluster.issuer, keys: () => [cluster.key.publicJwk], reviewerToken });
  const kubeconfig = await writeKubeconfig({ server: api.url, token: reviewerToken });
  return {
    tokenType: TOKEN_TYPE_KUBERNETES_SA,
    plugin: () => ({
      use: '@tessera/plugin-kubernetes',
      config: { clusters: [{ name: 'cluster-b', mode: 'tokenReview', issuer: cluster.issuer, kubeconfig: kubeconfig.path }] },
    }),
    mint: ({ audience, expiresIn }) => mintProjected(cluster, audience, workload(), { expiresIn: expiresIn ?? 300 }),
    mintUntrusted: ({ audience, expiresIn }) => mintProjected(stranger, audience, workload(), { expiresIn: expiresIn ?? 300 }),
    trustedPublicJwk: cluster.key.publicJwk,
    stallUpstream: () => api.stall(),
    close: async () => {
      await api.close();
      await kubeconfig.remove();
      await cluster.close();
      await stranger.close();
    },
  };
});
