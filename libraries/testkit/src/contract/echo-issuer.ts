import { z } from 'zod';
import { definePlugin, type TokenTypeUrn } from '@tessera/plugin-sdk';

/** What the validator contract requests, so a validator can be tested without any real issuer plugin. */
export const TOKEN_TYPE_CONTRACT_ECHO = 'urn:tessera:token-type:contract-echo' satisfies TokenTypeUrn;

/**
 * Issues an opaque token naming the rule that allowed the grant (`echo:<rule id>`): validator and policy
 * tests need a 200 and which rule decided, not a real token.
 */
export default definePlugin({
  name: 'contract-echo-issuer',
  version: '0.1.0',
  apiVersion: '^1',
  description: 'Test-only issuer used by the validator contract',
  config: z.object({}).strict(),
  deps: {},
  init: () => ({
    issuers: [
      {
        tokenTypes: [TOKEN_TYPE_CONTRACT_ECHO],
        issue: async (grant) => ({ token: `echo:${grant.ruleId}`, issuedTokenType: TOKEN_TYPE_CONTRACT_ECHO, tokenType: 'N_A', expiresIn: grant.lifetimeSeconds }),
      },
    ],
  }),
});
