import { z } from 'zod';
import {
  definePlugin,
  JwtVerifier,
  tokens,
  trustedIssuerSchema,
  TOKEN_TYPE_ID_TOKEN,
  TOKEN_TYPE_JWT,
  type SubjectValidator,
  type TokenTypeUrn,
  type ValidationContext,
  type VerifiedIdentity,
  type ValidationCaching,
} from '@tessera/plugin-sdk';

const tokenTypeUrn = z.string().regex(/^urn:\S+$/, 'must be a urn:');

export const oidcConfigSchema = z
  .object({
    tokenTypes: z
      .array(tokenTypeUrn)
      .min(1)
      .default([TOKEN_TYPE_JWT, TOKEN_TYPE_ID_TOKEN])
      .describe('Token type URNs this validator answers for'),
    issuers: z
      .array(trustedIssuerSchema)
      .min(1)
      .refine((list) => new Set(list.map((entry) => entry.issuer)).size === list.length, 'issuer listed twice')
      .describe('Trusted issuers'),
    maxTokenBytes: z.number().int().positive().max(65_536).default(16_384).describe('Longer tokens are refused unparsed'),
  })
  .strict();

export type OidcConfig = z.output<typeof oidcConfigSchema>;

/** Generic OIDC / JWT subject validator: any configured issuer with a JWKS. */
export class OidcValidator implements SubjectValidator {
  readonly tokenTypes: readonly TokenTypeUrn[];
  readonly clockSkewSeconds: number;
  /** Verification is a pure function of the token and the issuer's keys: core may reuse it. */
  readonly caching: ValidationCaching = {};

  constructor(
    config: OidcConfig,
    private readonly verifier: JwtVerifier,
  ) {
    this.tokenTypes = config.tokenTypes as TokenTypeUrn[];
    this.clockSkewSeconds = verifier.maxClockSkewSeconds;
  }

  async validate(token: string, ctx: ValidationContext): Promise<VerifiedIdentity> {
    return (await this.verifier.verify(token, ctx)).identity;
  }
}

export default definePlugin({
  name: 'oidc',
  version: '0.1.0',
  apiVersion: '^1',
  description: 'Validates JWTs and OIDC ID tokens from configured issuers',
  config: oidcConfigSchema,
  deps: { jwks: tokens.jwksCache, http: tokens.httpFetcher, log: tokens.logger },
  async init({ config, deps }) {
    const verifier = new JwtVerifier(config, deps);
    for (const { issuer, ok, reason } of await verifier.warm()) {
      if (!ok) deps.log.warn({ plugin: 'oidc', issuer, reason }, 'issuer keys not reachable at startup; will retry on first token');
    }
    return { validators: [new OidcValidator(config, verifier)] };
  },
});
