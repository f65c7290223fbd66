import { LoopbackIssuer } from '@tessera/plugin-testkit';
import { describeValidatorContract } from '@tessera/plugin-testkit/contract';
import { TOKEN_TYPE_GITHUB_ACTIONS } from '../src/index.js';
import { mintWorkflowToken } from './fixtures.js';

describeValidatorContract('@tessera/plugin-github-actions', async () => {
  const github = await LoopbackIssuer.start({ path: '/token', alg: 'RS256' });
  const impostor = await LoopbackIssuer.start({ path: '/token', alg: 'RS256' });
  return {
    tokenType: TOKEN_TYPE_GITHUB_ACTIONS,
    plugin: () => ({ use: '@tessera/plugin-github-actions', config: { issuer: github.issuer, owners: ['octo-org'] } }),
    mint: ({ audience, expiresIn }) => mintWorkflowToken(github, audience, {}, expiresIn),
    mintUntrusted: ({ audience, expiresIn }) => mintWorkflowToken(impostor, audience, {}, expiresIn),
    trustedPublicJwk: github.key.publicJwk,
    stallUpstream: () => github.stall(),
    close: async () => {
      await github.close();
      await impostor.close();
    },
  };
});
