import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import {
  definePlugin,
  tokens,
  TOKEN_TYPE_ACCESS_TOKEN,
  TOKEN_TYPE_JWT,
  type Grant,
  type IssueContext,
  type IssuedToken,
  type KeyRing,
  type TokenIssuer,
  type TokenTypeUrn,
} from '@tessera/plugin-sdk';

/** RFC 9068 §2.1: the `typ` header of a JWT access token. */
export const ACCESS_TOKEN_JWT_TYP = 'at+jwt';

export const accessTokenConfigSchema = z
  .object({
    maxLifetimeSeconds: z
      .number()
      .int()
      .positive()
      .max(86_400)
      .default(3_600)
      .describe('Hard cap on issued lifetimes, whatever policy grants'),
    issueAsJwtType: z
      .boolean()
      .default(false)
      .describe('Also answer requested_token_type urn:ietf:params:oauth:token-type:jwt with an access token'),
  })
  .strict();

export type AccessTokenConfig = z.output<typeof accessTokenConfigSchema>;

/** Issues RFC 9068 JWT access tokens signed with the broker's key ring. */
export class JwtAccessTokenIssuer implements TokenIssuer {
  readonly tokenTypes: readonly TokenTypeUrn[];

  constructor(
    private readonly config: AccessTokenConfig,
    private readonly keyRing: KeyRing,
  ) {
    this.tokenTypes = config.issueAsJwtType ? [TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT] : [TOKEN_TYPE_ACCESS_TOKEN];
  }

  async issue(grant: Grant, ctx: IssueContext): Promise<IssuedToken> {
    const lifetime = Math.min(grant.lifetimeSeconds, this.config.maxLifetimeSeconds);
    const issuedAt = Math.floor(ctx.now.getTime() / 1000);
    const jti = randomUUID();
    // RFC 9068 §2.2: iss, exp, aud, sub, client_id, iat, jti are required.
    const claims = {
      iss: ctx.brokerIssuer,
      sub: grant.subject.subject,
      aud: grant.audiences.length === 1 ? grant.audiences[0] : [...grant.audiences],
      iat: issuedAt,
      exp: issuedAt + lifetime,
      jti,
      client_id: grant.client.id,
      ...(grant.scopes.length > 0 ? { scope: grant.scopes.join(' ') } : {}),
    };
    const { token } = await this.keyRing.sign(claims, { typ: ACCESS_TOKEN_JWT_TYP });
    return { token, issuedTokenType: TOKEN_TYPE_ACCESS_TOKEN, tokenType: 'Bearer', expiresIn: lifetime, jti };
  }
}

export default definePlugin({
  name: 'access-token',
  version: '0.1.0',
  apiVersion: '^1',
  description: 'Issues RFC 9068 JWT access tokens signed by the broker key ring',
  config: accessTokenConfigSchema,
  deps: { keyRing: tokens.keyRing },
  init({ config, deps }) {
    return { issuers: [new JwtAccessTokenIssuer(config, deps.keyRing)] };
  },
});
