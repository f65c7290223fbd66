// Broken on purpose: reads the token without verifying anything.
import { decodeJwt } from 'jose';
import { definePlugin, InvalidToken } from '@tessera/plugin-sdk';
import { z } from 'zod';

export default definePlugin({
  name: 'lenient',
  version: '0.0.0',
  apiVersion: '^1',
  config: z.object({}).passthrough(),
  deps: {},
  init: () => ({
    validators: [
      {
        tokenTypes: ['urn:example:token-type:lenient'],
        async validate(token, ctx) {
          let claims;
          try {
            claims = decodeJwt(token);
          } catch {
            throw new InvalidToken('malformed');
          }
          const audiences = [claims.aud ?? []].flat();
          return { issuer: String(claims.iss), subject: String(claims.sub), audiences, expiresAt: new Date(Date.now() + 60_000), tokenType: ctx.tokenType, claims, attributes: {} };
        },
      },
    ],
  }),
});
