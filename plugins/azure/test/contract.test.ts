import { LoopbackIssuer } from '@tessera/plugin-testkit';
import { describeValidatorContract } from '@tessera/plugin-testkit/contract';
import { TOKEN_TYPE_AZURE_MI } from '../src/index.js';
import { authorityOf, mintMiToken, startEntra, TENANT } from './fixtures.js';

// The loopback server is the Entra authority; TENANT's v2.0 issuer is `{loopback}/{tid}/v2.0`. Here the
// app registration's Application ID URI is the broker's own issuer, so the kit's audience cases apply.
describeValidatorContract('@tessera/plugin-azure', async () => {
  const entra = await startEntra();
  const impostor = await LoopbackIssuer.start({ path: `/${TENANT}/v2.0`, alg: 'RS256' });
  return {
    tokenType: TOKEN_TYPE_AZURE_MI,
    plugin: (broker) => ({ use: '@tessera/plugin-azure', config: { tenants: [TENANT], audiences: [broker.issuer], authority: authorityOf(entra) } }),
    mint: ({ audience, expiresIn }) => mintMiToken(entra, { audience }, {}, { expiresIn }),
    mintUntrusted: ({ audience, expiresIn }) => mintMiToken(impostor, { audience }, {}, { expiresIn }),
    trustedPublicJwk: entra.key.publicJwk,
    stallUpstream: () => entra.stall(),
    close: async () => {
      await entra.close();
      await impostor.close();
    },
  };
});
