import { TOKEN_TYPE_ID_TOKEN } from '@tessera/plugin-sdk';
import { LoopbackIssuer } from '@tessera/plugin-testkit';
import { describeValidatorContract } from '@tessera/plugin-testkit/contract';

describeValidatorContract('@tessera/plugin-oidc', async () => {
  const trusted = await LoopbackIssuer.start();
  const stranger = await LoopbackIssuer.start();
  return {
    tokenType: TOKEN_TYPE_ID_TOKEN,
    plugin: () => ({ use: '@tessera/plugin-oidc', config: { issuers: [{ issuer: trusted.issuer, attributes: { email: 'email' } }] } }),
    mint: ({ audience, expiresIn }) => trusted.mint({ sub: 'user-1', aud: audience, email: 'user-1@example.test' }, { expiresIn }),
    mintUntrusted: ({ audience, expiresIn }) => stranger.mint({ sub: 'user-1', aud: audience }, { expiresIn }),
    trustedPublicJwk: trusted.key.publicJwk,
    stallUpstream: () => trusted.stall(),
    close: async () => {
      await trusted.close();
      await stranger.close();
    },
  };
});
