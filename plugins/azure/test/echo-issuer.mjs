// Test-only issuer: answers every allowed grant with an opaque token, so policy tests need no real issuer.
import { definePlugin } from '@tessera/plugin-sdk';
import { z } from 'zod';

export const TOKEN_TYPE_ECHO = 'urn:example:token-type:echo';

export default definePlugin({
  name: 'echo-issuer',
  version: '0.0.0',
  apiVersion: '^1',
  config: z.object({}).strict(),
  deps: {},
  init: () => ({
    issuers: [
      {
        tokenTypes: [TOKEN_TYPE_ECHO],
        issue: async (grant) => ({ token: `echo:${grant.ruleId}`, issuedTokenType: TOKEN_TYPE_ECHO, tokenType: 'N_A', expiresIn: grant.lifetimeSeconds }),
      },
    ],
  }),
});
