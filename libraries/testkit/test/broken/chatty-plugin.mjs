// Broken on purpose: right error class, but its audit detail quotes the token it refused.
import { definePlugin, InvalidToken, JwtVerifier, tokens, trustedIssuerSchema } from '@tessera/plugin-sdk';
import { z } from 'zod';

export default definePlugin({
  name: 'chatty',
  version: '0.0.0',
  apiVersion: '^1',
  config: z.object({ issuer: z.string() }),
  deps: { jwks: tokens.jwksCache, http: tokens.httpFetcher },
  init: ({ config, deps }) => {
    const verifier = new JwtVerifier({ issuers: [trustedIssuerSchema.parse({ issuer: config.issuer })] }, deps);
    return {
      validators: [
        {
          tokenTypes: ['urn:example:token-type:chatty'],
          async validate(token, ctx) {
            try {
              return (await verifier.verify(token, ctx)).identity;
            } catch (error) {
              throw new InvalidToken(error instanceof InvalidToken ? error.reason : 'malformed', `refused ${token}`);
            }
          },
        },
      ],
    };
  },
});
