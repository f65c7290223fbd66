import { randomUUID } from 'node:crypto';
import { errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import { z } from 'zod';
import {
  definePlugin,
  InvalidToken,
  OAuthError,
  TemporarilyUnavailable,
  decodeUnverifiedJwt,
  toInvalidToken,
  tokens,
  TOKEN_TYPE_ACCESS_TOKEN,
  TOKEN_TYPE_JWT,
  type AuthenticatedClient,
  type Grant,
  type IdentityAttributes,
  type IssueContext,
  type IssuedToken,
  type KeyRing,
  type RevocationList,
  type SubjectValidator,
  type TokenIssuer,
  type TokenTypeUrn,
  type ValidationContext,
  type VerifiedIdentity,
  type ValidationCaching,
} from '@tessera/plugin-sdk';

/** RFC 9068 §2.1: the `typ` header of a JWT access token. */
export const ACCESS_TOKEN_JWT_TYP = 'at+jwt';

/**
 * Claims the broker always sets itself (RFC 9068 §2.2, RFC 8693 §4, RFC 7800 `cnf`). Policy-mapped
 * claims never replace them; core already refuses them in `grant.claims`, this is the second fence.
 */
export const REGISTERED_CLAIMS: ReadonlySet<string> = new Set(['iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti', 'client_id', 'scope', 'scp', 'act', 'may_act', 'cnf']);

/** Tolerance for `exp` and `iat` of the broker's own tokens: one clock, so it can be small. */
export const OWN_TOKEN_CLOCK_SKEW_SECONDS = 30;

/** Issued tokens are capped far below this by `limits.maxIssuedTokenBytes`; anything longer is not ours. */
const MAX_OWN_TOKEN_BYTES = 65_536;
const MAX_JTI_LENGTH = 256;

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
    acceptOwnTokens: z
      .boolean()
      .default(true)
      .describe(
        'Accept access tokens this broker issued as subject or actor tokens (urn:ietf:params:oauth:token-type:access_token): own keys and issuer only, not revoked, audience naming the broker or the presenting client. Turn off to let another plugin validate that token type',
      ),
  })
  .strict();

export type AccessTokenConfig = z.output<typeof accessTokenConfigSchema>;

/**
 * The RFC 9068 claims for a grant: what `issue` signs and `preview` shows. Policy-mapped claims come first
 * so the registered ones, always decided here, win. Without `jti` (preview) the claim is left out.
 */
export function accessTokenClaims(grant: Grant, ctx: Pick<IssueContext, 'brokerIssuer' | 'now'>, config: AccessTokenConfig, jti?: string): JWTPayload {
  const lifetime = Math.min(grant.lifetimeSeconds, config.maxLifetimeSeconds);
  const issuedAt = Math.floor(ctx.now.getTime() / 1000);
  const mapped = Object.entries(grant.claims ?? {}).filter(([name]) => !REGISTERED_CLAIMS.has(name));
  return {
    ...Object.fromEntries(mapped),
    // RFC 9068 §2.2: iss, exp, aud, sub, client_id, iat, jti are required.
    iss: ctx.brokerIssuer,
    sub: grant.subject.subject,
    aud: grant.audiences.length === 1 ? grant.audiences[0] : [...grant.audiences],
    iat: issuedAt,
    exp: issuedAt + lifetime,
    ...(jti !== undefined ? { jti } : {}),
    client_id: grant.client.id,
    ...(grant.scopes.length > 0 ? { scope: grant.scopes.join(' ') } : {}),
    // RFC 8693 §4.1: the delegation chain, current actor outermost, exactly as core built it.
    ...(grant.act ? { act: grant.act } : {}),
  };
}

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
    const jti = randomUUID();
    const claims = accessTokenClaims(grant, ctx, this.config, jti);
    const { token } = await this.keyRing.sign(claims, { typ: ACCESS_TOKEN_JWT_TYP });
    const expiresIn = (claims.exp as number) - (claims.iat as number);
    return { token, issuedTokenType: TOKEN_TYPE_ACCESS_TOKEN, tokenType: 'Bearer', expiresIn, jti };
  }

  /** The claims `issue` would sign, except `jti` (random per token). Signs nothing, contacts nothing. */
  preview(grant: Grant, ctx: Omit<IssueContext, 'signal'>): Readonly<Record<string, unknown>> {
    return accessTokenClaims(grant, ctx, this.config);
  }
}

export interface BrokerAccessTokenValidatorDeps {
  readonly keyRing: KeyRing;
  readonly revocationList: RevocationList;
}

/**
 * Accepts only access tokens this broker issued: signed by its own key ring, `iss` exactly the broker,
 * `typ` at+jwt, unexpired, not revoked. The audience must name the broker, or (except at doors that want
 * the broker only) the authenticated client presenting it: a client that received a token, such as an MCP
 * server, may exchange it onwards.
 */
export class BrokerAccessTokenValidator implements SubjectValidator {
  readonly tokenTypes: readonly TokenTypeUrn[] = [TOKEN_TYPE_ACCESS_TOKEN];
  readonly actorTrust = 'broker' as const;
  readonly clockSkewSeconds = OWN_TOKEN_CLOCK_SKEW_SECONDS;
  /** A reused verification still asks the revocation list (RFC 7009) every time. */
  readonly caching: ValidationCaching = {
    recheck: async (identity) => {
      if (await isRevoked(this.deps.revocationList, identity.claims.jti as string)) throw new InvalidToken('claims', 'revoked');
    },
  };

  constructor(private readonly deps: BrokerAccessTokenValidatorDeps) {}

  async validate(token: string, ctx: ValidationContext): Promise<VerifiedIdentity> {
    // RFC 7515 §4.1.11: the broker never sets `crit`, so a token carrying one is not ours.
    if (decodeUnverifiedJwt(token, MAX_OWN_TOKEN_BYTES).header.crit !== undefined) throw new InvalidToken('malformed', 'crit header');
    let payload: JWTPayload;
    try {
      // Keys come only from the broker's own ring: `jwk`, `jku`, `x5u`, `x5c` headers are never consulted.
      ({ payload } = await jwtVerify(token, this.deps.keyRing.verifier(), {
        issuer: ctx.brokerIssuer,
        typ: ACCESS_TOKEN_JWT_TYP,
        algorithms: [...this.deps.keyRing.algorithms],
        clockTolerance: OWN_TOKEN_CLOCK_SKEW_SECONDS,
        currentDate: ctx.now,
        requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id'],
      }));
    } catch (error) {
      throw rejection(error);
    }

    const nowSeconds = Math.floor(ctx.now.getTime() / 1000);
    if ((payload.iat as number) > nowSeconds + OWN_TOKEN_CLOCK_SKEW_SECONDS) throw new InvalidToken('not_yet_valid', 'iat in the future');
    if (typeof payload.sub !== 'string' || payload.sub === '') throw new InvalidToken('claims', 'sub');
    const clientId = payload.client_id;
    if (typeof clientId !== 'string' || clientId === '') throw new InvalidToken('claims', 'client_id');
    const { jti } = payload;
    if (typeof jti !== 'string' || jti === '' || jti.length > MAX_JTI_LENGTH) throw new InvalidToken('claims', 'jti');
    if (payload.scope !== undefined && typeof payload.scope !== 'string') throw new InvalidToken('claims', 'scope');
    const audiences = audiencesOf(payload.aud);
    if (!audiences) throw new InvalidToken('claims', 'aud');
    if (!audiences.some((audience) => acceptedAudiences(ctx).has(audience))) throw new InvalidToken('audience', 'names neither the broker nor the client');
    // RFC 7009: revoked until it would have expired anyway. Checked last, so only genuine tokens reach the list.
    if (await isRevoked(this.deps.revocationList, jti)) throw new InvalidToken('claims', 'revoked');

    const attributes: Record<string, string | readonly string[]> = { client_id: clientId };
    if (typeof payload.scope === 'string') attributes.scopes = payload.scope.split(' ').filter((scope) => scope !== '');
    return {
      issuer: ctx.brokerIssuer,
      subject: payload.sub,
      audiences,
      expiresAt: new Date((payload.exp as number) * 1000),
      tokenType: TOKEN_TYPE_ACCESS_TOKEN,
      claims: payload,
      attributes: attributes satisfies IdentityAttributes,
    };
  }
}

/** A list that cannot answer is a 503 (retry), never "not revoked" and never a refusal of the token. */
async function isRevoked(list: RevocationList, jti: string): Promise<boolean> {
  try {
    return await list.isRevoked(jti);
  } catch (error) {
    if (error instanceof OAuthError) throw error;
    throw new TemporarilyUnavailable(undefined, { detail: 'revocation list unavailable', cause: error });
  }
}

/** The broker itself, and (unless the door wants the broker only) the client presenting the token. */
function acceptedAudiences(ctx: ValidationContext): ReadonlySet<string> {
  const accepted = new Set([ctx.brokerIssuer, ctx.tokenEndpoint]);
  if (!ctx.brokerAudienceOnly && ctx.client && isAuthenticated(ctx.client)) {
    accepted.add(ctx.client.id);
    if (ctx.client.identity) accepted.add(ctx.client.identity.subject);
  }
  return accepted;
}

/** A public client (`none`) only names itself: anyone could claim its id, so it is never a token's recipient here. */
function isAuthenticated(client: AuthenticatedClient): boolean {
  return client.authMethod !== 'none';
}

function audiencesOf(aud: unknown): string[] | undefined {
  if (typeof aud === 'string') return [aud];
  if (Array.isArray(aud) && aud.length > 0 && aud.every((item) => typeof item === 'string')) return [...(aud as string[])];
  return undefined;
}

/** jose's errors as fixed rejection reasons; nothing of the token goes into them. */
function rejection(error: unknown): Error {
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    if (error.claim === 'iss') return new InvalidToken('untrusted_issuer', 'claim iss');
    if (error.claim === 'typ') return new InvalidToken('type', 'typ header');
  }
  const mapped = toInvalidToken(error);
  if (mapped instanceof InvalidToken) return mapped;
  // Any other jose refusal is still about the token, not a plugin fault.
  return error instanceof joseErrors.JOSEError ? new InvalidToken('malformed') : mapped;
}

export default definePlugin({
  name: 'access-token',
  version: '0.1.0',
  // 1.2: Grant.act and Grant.claims, the revocation list.
  apiVersion: '^1.2',
  description: 'Issues RFC 9068 JWT access tokens signed by the broker key ring, and accepts them back for exchange',
  config: accessTokenConfigSchema,
  deps: { keyRing: tokens.keyRing, revocationList: tokens.revocationList },
  init({ config, deps }) {
    return {
      issuers: [new JwtAccessTokenIssuer(config, deps.keyRing)],
      ...(config.acceptOwnTokens ? { validators: [new BrokerAccessTokenValidator({ keyRing: deps.keyRing, revocationList: deps.revocationList })] } : {}),
    };
  },
});
