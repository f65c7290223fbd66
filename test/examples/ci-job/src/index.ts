import { z } from 'zod';
import { definePlugin, InvalidToken, JwtVerifier, tokens, trustedIssuerSchema, type SubjectValidator } from '@tessera/plugin-sdk';

/** What callers put in `subject_token_type`. Use a URN in a namespace you own. */
export const TOKEN_TYPE_CI_JOB = 'urn:example:token-type:ci-job';

/** The block operators write under `plugins[].config`. It is also published in the broker's JSON Schema. */
const configSchema = z
  .object({
    issuer: z.url().describe('Exact `iss` of the CI system; its keys are found through OIDC discovery'),
    projects: z.array(z.string().min(1)).min(1).describe('Projects whose jobs may exchange their tokens'),
  })
  .strict();

export default definePlugin({
  name: 'ci-job',
  version: '1.0.0',
  apiVersion: '^1',
  description: 'Accepts CI job tokens from one CI system',
  config: configSchema,
  // Core services arrive through the broker's DI container; a plugin never imports core.
  deps: { jwks: tokens.jwksCache, http: tokens.httpFetcher },
  init({ config, deps }) {
    // JwtVerifier does the dangerous part: exact issuer, keys from that issuer only, algorithm
    // allow-list, exp required, audience must name the broker, no crit/jku/x5u tricks.
    const verifier = new JwtVerifier({ issuers: [trustedIssuerSchema.parse({ issuer: config.issuer })] }, deps);

    const validator: SubjectValidator = {
      tokenTypes: [TOKEN_TYPE_CI_JOB],
      async validate(token, ctx) {
        const { identity, payload } = await verifier.verify(token, ctx);
        if (typeof payload.project !== 'string' || !config.projects.includes(payload.project)) {
          // Errors name the claim, never its value: descriptions must not echo token contents.
          throw new InvalidToken('claims', 'project not allowed');
        }
        // Policy sees only these attributes: strings or lists of strings.
        const attributes: Record<string, string> = { 'ci.project': payload.project };
        if (typeof payload.ref === 'string') attributes['ci.ref'] = payload.ref;
        return { ...identity, attributes };
      },
    };
    return { validators: [validator] };
  },
});
