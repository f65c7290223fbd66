import { TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT } from '@tessera/plugin-sdk';
import { describeIssuerContract } from '@tessera/plugin-testkit/contract';

describeIssuerContract('@tessera/plugin-access-token', async () => ({
  tokenType: TOKEN_TYPE_ACCESS_TOKEN,
  plugin: () => ({ use: '@tessera/plugin-access-token' }),
  // Resource servers verify these like any OIDC-style JWT: the broker's JWKS, its issuer, their own audience.
  roundTrip: (broker, audiences) => ({
    tokenType: TOKEN_TYPE_JWT,
    plugin: {
      use: '@tessera/plugin-oidc',
      config: { tokenTypes: [TOKEN_TYPE_JWT], issuers: [{ issuer: broker.issuer, jwksUri: `${broker.issuer}/keys`, allowedAudiences: audiences }] },
    },
  }),
}));
