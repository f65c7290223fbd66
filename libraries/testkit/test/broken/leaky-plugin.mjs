// Broken on purpose: verifies properly, then reports failures as raw errors quoting the token.
import { definePlugin, JwtVerifier, tokens, trustedIssuerSchema } from '@tessera/plugin-sdk';
import { z } from 'zod';

export default definePlugin({
  name: 'leaky',
  version: '0.0.0',
  apiVersion: '^1',
  config: z.object({ issuer: z.string() }),
  deps: { jwks: tokens.jwksCache, http: tokens.httpFetcher },
  init: ({ config, deps }) => {
    const verifier = new JwtVerifier({ issuers: [trustedIssuerSchema.parse({ issuer: config.issuer })] }, deps);
    return {
      validators: [
        {
          tokenTypes: ['urn:example:token-type:leaky'],
          async validate(token, ctx) {
            try {
              return (await verifier.verify(token, ctx)).identity;
            } catch {
              throw new Error(`cannot accept ${token}`);
            }
          },
        },
      ],
    };
  },
});
