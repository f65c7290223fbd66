import { jwtVerify, type JWTPayload } from 'jose';
import { decodeUnverifiedJwt, InvalidToken, TemporarilyUnavailable, toInvalidToken, type ValidationContext, type VerifiedIdentity } from '@tessera/plugin-sdk';
import { parseSpiffeId, trustDomainId, type SpiffeId } from '@tessera/spiffe';
import type { TrustStore } from './trust-store.js';

/** JWT-SVID §3: the only algorithms a JWT-SVID may use. */
export const JWT_SVID_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512'] as const;

/** JWT-SVID §2: these header members and no others. */
const ALLOWED_HEADERS = new Set(['alg', 'kid', 'typ']);

export interface JwtSvidVerifierOptions {
  readonly algorithms: ReadonlyMap<string, readonly string[]>;
  /** Audiences accepted besides the broker's own, for subject and actor tokens (never for client assertions). */
  readonly allowedAudiences: readonly string[];
  readonly clockSkewSeconds: number;
  readonly maxTokenLifetimeSeconds: number;
  readonly maxTokenBytes: number;
}

/**
 * Verifies JWT-SVIDs (JWT-SVID.md): the key comes only from the bundle of the trust domain named in
 * `sub`, `kid` is required, `typ` is JWT/JOSE or absent, `exp` is required, and the audience must name
 * this broker. A trusted domain whose bundle has not arrived yet is an outage (503), not a bad token.
 */
export class JwtSvidVerifier {
  constructor(
    private readonly store: TrustStore,
    private readonly options: JwtSvidVerifierOptions,
  ) {}

  async verify(token: string, ctx: ValidationContext): Promise<VerifiedIdentity> {
    const { header, payload: unverified } = decodeUnverifiedJwt(token, this.options.maxTokenBytes);
    if (Object.keys(header).some((name) => !ALLOWED_HEADERS.has(name))) throw new InvalidToken('malformed', 'header member not allowed in a JWT-SVID');
    if (header.typ !== undefined && header.typ !== 'JWT' && header.typ !== 'JOSE') throw new InvalidToken('malformed', 'typ');
    if (typeof header.kid !== 'string' || header.kid === '') throw new InvalidToken('unknown_key', 'kid missing');

    let spiffeId: SpiffeId;
    try {
      spiffeId = parseSpiffeId(typeof unverified.sub === 'string' ? unverified.sub : '');
    } catch {
      throw new InvalidToken('claims', 'sub is not a SPIFFE ID');
    }
    // `spiffe://td` names the trust domain itself, never a workload.
    if (spiffeId.path === '') throw new InvalidToken('claims', 'sub has no workload path');
    const { trustDomain } = spiffeId;
    if (!this.store.trustDomains.has(trustDomain)) throw new InvalidToken('untrusted_issuer', 'trust domain not trusted');
    const algorithms = this.options.algorithms.get(trustDomain)!;
    if (typeof header.alg !== 'string' || !algorithms.includes(header.alg)) throw new InvalidToken('algorithm', 'alg not allowed for trust domain');
    const bundle = await this.store.await(trustDomain, ctx.signal);
    if (!bundle) {
      throw new TemporarilyUnavailable('trust bundle is unavailable, retry later', { detail: `no bundle yet for ${trustDomain}`, retryAfterSeconds: 5 });
    }

    // Client assertions name only this broker; subject and actor tokens may also name configured audiences.
    const extra = ctx.role === 'client' || ctx.brokerAudienceOnly ? [] : this.options.allowedAudiences;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, bundle.keys, {
        audience: [ctx.brokerIssuer, ctx.tokenEndpoint, ...extra],
        algorithms: [...algorithms],
        clockTolerance: this.options.clockSkewSeconds,
        currentDate: ctx.now,
        requiredClaims: ['sub', 'aud', 'exp'],
      }));
    } catch (error) {
      throw toInvalidToken(error);
    }
    const nowSeconds = Math.floor(ctx.now.getTime() / 1000);
    if (typeof payload.iat === 'number' && payload.iat > nowSeconds + this.options.clockSkewSeconds) throw new InvalidToken('not_yet_valid', 'iat in the future');
    const exp = payload.exp!;
    if (exp - (payload.iat ?? nowSeconds) > this.options.maxTokenLifetimeSeconds) throw new InvalidToken('lifetime', 'exp too far after iat');

    return {
      // JWT-SVIDs need not carry `iss`; the trust domain is what vouches for them.
      issuer: trustDomainId(trustDomain),
      subject: spiffeId.toString(),
      audiences: typeof payload.aud === 'string' ? [payload.aud] : [...(payload.aud ?? [])],
      expiresAt: new Date(exp * 1000),
      tokenType: ctx.tokenType,
      claims: payload,
      attributes: { 'spiffe.id': spiffeId.toString(), 'spiffe.trustDomain': trustDomain, 'spiffe.path': spiffeId.path },
    };
  }
}
