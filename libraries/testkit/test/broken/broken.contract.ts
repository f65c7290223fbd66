// Run only by kit-catches-broken-plugins.test.ts: each suite here is expected to fail.
import { fileURLToPath } from 'node:url';
import { LoopbackIssuer } from '../../src/index.js';
import { describeValidatorContract } from '../../src/contract/index.js';

for (const name of ['lenient', 'leaky', 'chatty'] as const) {
  describeValidatorContract(name, async () => {
    const idp = await LoopbackIssuer.start();
    const stranger = await LoopbackIssuer.start();
    return {
      tokenType: `urn:example:token-type:${name}`,
      plugin: () => ({ use: fileURLToPath(new URL(`./${name}-plugin.mjs`, import.meta.url)), config: { issuer: idp.issuer } }),
      mint: ({ audience, expiresIn }) => idp.mint({ sub: 'someone', aud: audience }, { expiresIn }),
      mintUntrusted: ({ audience, expiresIn }) => stranger.mint({ sub: 'someone', aud: audience }, { expiresIn }),
      trustedPublicJwk: idp.key.publicJwk,
      close: async () => {
        await idp.close();
        await stranger.close();
      },
    };
  });
}
