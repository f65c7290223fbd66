import { LoopbackIssuer } from '@tessera/plugin-testkit';
import { describeValidatorContract } from '@tessera/plugin-testkit/contract';
import { TOKEN_TYPE_KUBERNETES_SA } from '../src/index.js';
import { mintProjected, workload } from './fixtures.js';

// Offline mode: the cluster issuer serves OIDC discovery and its JWKS, as kube-apiserver does at
// /.well-known/openid-configuration and /openid/v1/jwks.
describeValidatorContract('@tessera/plugin-kubernetes (offline)', async () => {
  const cluster = await LoopbackIssuer.start({ path: '/cluster-a', alg: 'RS256' });
  const stranger = await LoopbackIssuer.start({ path: '/cluster-a', alg: 'RS256' });
  return {
    tokenType: TOKEN_TYPE_KUBERNETES_SA,
    plugin: () => ({
      use: '@tessera/plugin-kubernetes',
      config: { clusters: [{ name: 'cluster-a', mode: 'offline', issuer: cluster.issuer, algorithms: ['RS256'] }] },
    }),
    mint: ({ audience, expiresIn }) => mintProjected(cluster, audience, workload(), { expiresIn: expiresIn ?? 300 }),
    mintUntrusted: ({ audience, expiresIn }) => mintProjected(stranger, audience, workload(), { expiresIn: expiresIn ?? 300 }),
    trustedPublicJwk: cluster.key.publicJwk,
    stallUpstream: () => cluster.stall(),
    close: async () => {
      await cluster.close();
      await stranger.close();
    },
  };
});
