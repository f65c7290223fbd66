import { errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import { z } from 'zod';
import { BackoffMemo } from './backoff-memo.js';
import { decodeUnverifiedJwt } from './compact-jws.js';
import type { IdentityAttributes, ValidationContext, VerifiedIdentity } from './contracts.js';
import { InvalidToken, OAuthError, TemporarilyUnavailable, type TokenRejection } from './errors.js';
import type { HttpFetcher, JwksCache } from './services.js';

/** Asymmetric JWS algorithms only: a shared-secret (HS*) key would let anyone holding it mint tokens. */
export const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;
export const DEFAULT_ALGORITHMS = ['RS256', 'ES256', 'EdDSA', 'PS256'] as const;

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

function isLoopback(url: URL): boolean {
  return LOOPBACK_HOSTS.has(url.hostname) || /^127\.\d+\.\d+\.\d+$/.test(url.hostname);
}

/** `https:` URL, or `http:` on loopback (the broker's fetcher still refuses it unless the operator allowed loopback HTTP). */
export const fetchableUrl = z.string().refine(
  (value) => {
    if (!URL.canParse(value)) return false;
    const url = new URL(value);
    return url.protocol === 'https:' || (url.protocol === 'http:' && isLoopback(url));
  },
  { message: 'must be an https URL (http only for loopback)' },
);

export const trustedIssuerSchema = z
  .object({
    issuer: z.string().min(1).describe('Exact `iss` value; compared byte for byte (trailing slash included)'),
    jwksUri: fetchableUrl.optional().describe('JWKS URL; when absent, found through OIDC discovery of the issuer'),
    allowedAudiences: z.array(z.string().min(1)).default([]).describe('Audiences accepted besides the broker issuer and token endpoint'),
    algorithms: z.array(z.enum(ASYMMETRIC_ALGORITHMS)).min(1).default([...DEFAULT_ALGORITHMS]).describe('Allowed JWS algorithms'),
    clockSkewSeconds: z.number().int().min(0).max(300).default(60).describe('Tolerance for exp, nbf and iat'),
    maxTokenLifetimeSeconds: z.number().int().positive().default(86_400).describe('Refuse tokens whose exp - iat exceeds this'),
    attributes: z
      .record(z.string(), z.string())
      .default({})
      .describe('Policy attributes: attribute name -> claim name, or a JSON Pointer into nested claims (/kubernetes.io/namespace). Only mapped claims reach policy'),
  })
  .strict();

export type TrustedIssuerConfig = z.output<typeof trustedIssuerSchema>;

export interface JwtVerifierDeps {
  readonly jwks: JwksCache;
  readonly http: HttpFetcher;
}

export interface JwtVerifierOptions {
  readonly issuers: readonly TrustedIssuerConfig[];
  /** Tokens longer than this are refused before any parsing. */
  readonly maxTokenBytes?: number;
}

/** The result of a verification: the identity plus the verified payload for plugins that read more claims. */
export interface VerifiedJwt {
  readonly identity: VerifiedIdentity;
  readonly payload: JWTPayload;
  readonly issuer: TrustedIssuerConfig;
}

/**
 * Verifies JWTs from a fixed set of issuers (RFC 8725): the issuer is chosen by the token's exact `iss`
 * among configured ones, its keys come only from that issuer's JWKS, its algorithms from an allow-list.
 * Shared by every plugin whose tokens are OIDC-style JWTs (Kubernetes, GCP, Azure...).
 */
export class JwtVerifier {
  readonly #issuers: ReadonlyMap<string, TrustedIssuerConfig>;
  readonly #discoveries = new BackoffMemo<string>();
  readonly #maxTokenBytes: number;

  constructor(
    options: JwtVerifierOptions,
    private readonly deps: JwtVerifierDeps,
  ) {
    this.#issuers = new Map(options.issuers.map((issuer) => [issuer.issuer, issuer]));
    this.#maxTokenBytes = options.maxTokenBytes ?? 16_384;
  }

  get issuers(): readonly TrustedIssuerConfig[] {
    return [...this.#issuers.values()];
  }

  /** The largest skew any configured issuer allows: what a validator built on this verifier declares. */
  get maxClockSkewSeconds(): number {
    return Math.max(0, ...this.issuers.map((issuer) => issuer.clockSkewSeconds));
  }

  /**
   * Fetches every issuer's keys once; failures are reported, not thrown: the issuer may come up later.
   * `reason` says why discovery failed (a JWKS failure is logged by the JWKS cache itself).
   */
  async warm(): Promise<{ issuer: string; ok: boolean; reason?: string }[]> {
    return Promise.all(
      this.issuers.map(async (issuer) => {
        try {
          return { issuer: issuer.issuer, ok: await this.deps.jwks.warm(await this.#jwksUriOf(issuer)) };
        } catch (error) {
          // Best effort: a failed warm-up must not hold back the first real token with a backoff.
          this.#discoveries.forgetFailure(issuer.issuer);
          const cause = (error as { cause?: unknown }).cause;
          return { issuer: issuer.issuer, ok: false, reason: cause instanceof Error ? cause.message : (error as OAuthError).detail ?? String(error) };
        }
      }),
    );
  }

  async verify(token: string, ctx: ValidationContext): Promise<VerifiedJwt> {
    const { header, payload: unverified } = decodeUnverifiedJwt(token, this.#maxTokenBytes);
    // RFC 7515 §4.1.11: we understand no critical extensions, so any `crit` is a refusal.
    if (header.crit !== undefined) throw new InvalidToken('malformed', 'crit header');
    // The unverified `iss` only picks which configured issuer's keys to try; the signature must then verify with them.
    const trusted = typeof unverified.iss === 'string' ? this.#issuers.get(unverified.iss) : undefined;
    if (!trusted) throw new InvalidToken('untrusted_issuer');
    if (typeof header.alg !== 'string' || !(trusted.algorithms as readonly string[]).includes(header.alg)) {
      throw new InvalidToken('algorithm', 'alg not allowed for issuer');
    }

    const keys = this.deps.jwks.remote(await this.#jwksUriOf(trusted));
    let payload: JWTPayload;
    try {
      // `jwk`, `jku`, `x5u`, `x5c` headers are never consulted: keys come only from the issuer's JWKS.
      ({ payload } = await jwtVerify(token, keys, {
        issuer: trusted.issuer,
        audience: [ctx.brokerIssuer, ctx.tokenEndpoint, ...(ctx.brokerAudienceOnly ? [] : trusted.allowedAudiences)],
        algorithms: trusted.algorithms,
        clockTolerance: trusted.clockSkewSeconds,
        currentDate: ctx.now,
        requiredClaims: ['iss', 'sub', 'aud', 'exp'],
      }));
    } catch (error) {
      throw toInvalidToken(error);
    }
    const nowSeconds = Math.floor(ctx.now.getTime() / 1000);
    if (typeof payload.iat === 'number' && payload.iat > nowSeconds + trusted.clockSkewSeconds) {
      throw new InvalidToken('not_yet_valid', 'iat in the future');
    }
    const exp = payload.exp as number;
    if (exp - (payload.iat ?? nowSeconds) > trusted.maxTokenLifetimeSeconds) throw new InvalidToken('lifetime', 'exp too far after iat');
    if (typeof payload.sub !== 'string' || payload.sub === '') throw new InvalidToken('claims', 'sub');

    const identity: VerifiedIdentity = {
      issuer: trusted.issuer,
      subject: payload.sub,
      audiences: typeof payload.aud === 'string' ? [payload.aud] : [...(payload.aud ?? [])],
      expiresAt: new Date(exp * 1000),
      tokenType: ctx.tokenType,
      claims: payload,
      attributes: mapAttributes(payload, trusted.attributes),
    };
    return { identity, payload, issuer: trusted };
  }

  /**
   * The issuer's JWKS URL: configured, or discovered once and shared by warm-up and every token. A failed
   * discovery is answered from cache until its backoff (1 s doubling to 60 s) ends, so forged tokens naming
   * a dark issuer cannot make the broker fetch once per request.
   */
  #jwksUriOf(issuer: TrustedIssuerConfig): Promise<string> {
    if (issuer.jwksUri) return Promise.resolve(issuer.jwksUri);
    return this.#discoveries.get(issuer.issuer, () => this.#discover(issuer));
  }

  async #discover(issuer: TrustedIssuerConfig): Promise<string> {
    const discoveryUrl = `${issuer.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    const document = await this.deps.http.getJson(discoveryUrl).catch((cause: unknown) => {
      // The issuer is trusted but unreachable: an upstream outage, not a bad token.
      throw new TemporarilyUnavailable('token issuer is unavailable, retry later', { detail: `discovery unavailable: ${new URL(discoveryUrl).origin}`, cause });
    });
    const parsed = discoverySchema.safeParse(document);
    // OIDC Discovery §4.3: the document's issuer must be identical to the configured one.
    if (!parsed.success || parsed.data.issuer !== issuer.issuer) throw new InvalidToken('untrusted_issuer', 'discovery document mismatch');
    return parsed.data.jwks_uri;
  }
}

/** One discovery attempt per issuer, shared by every caller until it fails and its backoff ends. */
const discoverySchema = z.object({ issuer: z.string(), jwks_uri: fetchableUrl });

function mapAttributes(payload: JWTPayload, mapping: Readonly<Record<string, string>>): IdentityAttributes {
  const attributes: Record<string, string | readonly string[]> = {};
  for (const [attribute, claim] of Object.entries(mapping)) {
    const value = claim.startsWith('/') ? pointer(payload, claim) : payload[claim];
    if (typeof value === 'string') attributes[attribute] = value;
    else if (typeof value === 'number' || typeof value === 'boolean') attributes[attribute] = String(value);
    else if (Array.isArray(value) && value.every((item) => typeof item === 'string')) attributes[attribute] = value;
  }
  return attributes;
}

/** RFC 6901 JSON Pointer into the claims (`/kubernetes.io/serviceaccount/name`); own properties only. */
function pointer(payload: JWTPayload, path: string): unknown {
  let current: unknown = payload;
  for (const raw of path.slice(1).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (typeof current !== 'object' || current === null || Array.isArray(current) || !Object.hasOwn(current, key)) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

const REJECTIONS: Readonly<Record<string, TokenRejection>> = {
  ERR_JWT_EXPIRED: 'expired',
  ERR_JWS_SIGNATURE_VERIFICATION_FAILED: 'signature',
  ERR_JOSE_ALG_NOT_ALLOWED: 'algorithm',
  ERR_JWKS_NO_MATCHING_KEY: 'unknown_key',
  ERR_JWKS_MULTIPLE_MATCHING_KEYS: 'unknown_key',
  ERR_JWS_INVALID: 'malformed',
  ERR_JWT_INVALID: 'malformed',
  ERR_JOSE_NOT_SUPPORTED: 'algorithm',
  ERR_JWK_INVALID: 'unknown_key',
};

/** Maps jose's verification errors to token rejections; broker errors (e.g. JWKS outage) pass through. */
export function toInvalidToken(error: unknown): Error {
  if (error instanceof OAuthError) return error;
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    const reason: TokenRejection = error.claim === 'aud' ? 'audience' : error.claim === 'nbf' ? 'not_yet_valid' : 'claims';
    return new InvalidToken(reason, `claim ${error.claim}`);
  }
  if (error instanceof joseErrors.JOSEError) {
    const reason = REJECTIONS[error.code];
    if (reason) return new InvalidToken(reason);
  }
  return error instanceof Error ? error : new Error(String(error));
}
