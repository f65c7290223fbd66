import { LoopbackIssuer } from '@tessera/plugin-testkit';
import { describeValidatorContract } from '@tessera/plugin-testkit/contract';

describeValidatorContract('ci-job', async () => {
  const ci = await LoopbackIssuer.start(); // a real OIDC issuer on loopback: discovery, JWKS, signed tokens
  const stranger = await LoopbackIssuer.start();
  const claims = { sub: 'job-42', project: 'web', ref: 'main' };
  return {
    tokenType: 'urn:example:token-type:ci-job',
    plugin: () => ({ use: '@tessera/plugin-example-ci-job', config: { issuer: ci.issuer, projects: ['web'] } }),
    mint: ({ audience, expiresIn }) => ci.mint({ ...claims, aud: audience }, { expiresIn }),
    mintUntrusted: ({ audience, expiresIn }) => stranger.mint({ ...claims, aud: audience }, { expiresIn }),
    stallUpstream: () => ci.stall(),
    close: async () => {
      await ci.close();
      await stranger.close();
    },
  };
});
