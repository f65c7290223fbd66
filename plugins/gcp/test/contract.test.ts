import { LoopbackIssuer } from '@tessera/plugin-testkit';
import { describeValidatorContract } from '@tessera/plugin-testkit/contract';
import { TOKEN_TYPE_GCP_ID_TOKEN } from '../src/index.js';
import { mintGoogleToken } from './fixtures.js';

// The loopback issuer stands in for https://accounts.google.com, its JWKS for Google's fixed JWKS URL.
describeValidatorContract('@tessera/plugin-gcp', async () => {
  const google = await LoopbackIssuer.start({ alg: 'RS256' });
  const impostor = await LoopbackIssuer.start({ alg: 'RS256' });
  return {
    tokenType: TOKEN_TYPE_GCP_ID_TOKEN,
    plugin: () => ({
      use: '@tessera/plugin-gcp',
      config: { issuers: [google.issuer, 'accounts.google.com'], jwksUri: google.jwksUri, projects: ['web-prod'] },
    }),
    mint: ({ audience, expiresIn }) => mintGoogleToken(google, audience, {}, { expiresIn }),
    mintUntrusted: ({ audience, expiresIn }) => mintGoogleToken(impostor, audience, {}, { expiresIn }),
    trustedPublicJwk: google.key.publicJwk,
    stallUpstream: () => google.stall(),
    close: async () => {
      await google.close();
      await impostor.close();
    },
  };
});
