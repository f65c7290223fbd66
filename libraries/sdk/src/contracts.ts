/** A token type identifier (RFC 8693 §3), e.g. `urn:ietf:params:oauth:token-type:jwt`. */
export type TokenTypeUrn = `urn:${string}`;

/** Attribute values a validator hands to policy: strings or lists of strings, nothing nested. */
export type IdentityAttributes = Readonly<Record<string, string | readonly string[]>>;

/**
 * Who a token proves, after its signature, issuer, audience and lifetime were verified.
 * Validators produce it; policy reads it; issuers turn it into a new token.
 */
export interface VerifiedIdentity {
  /** Exact issuer of the verified token. */
  readonly issuer: string;
  /** Subject as the issuer names it (`sub`, a SPIFFE ID, an ARN...). */
  readonly subject: string;
  /** Audiences the verified token was issued for. */
  readonly audiences: readonly string[];
  readonly expiresAt: Date;
  /** The token type the token was presented as. */
  readonly tokenType: TokenTypeUrn;
  /** Verified claims, JSON-safe. Policy may map selected claims into issued tokens. */
  readonly claims: Readonly<Record<string, unknown>>;
  /** Normalized attributes for policy (`k8s.namespace`, `email`...). Only what the plugin chose to expose. */
  readonly attributes: IdentityAttributes;
}

/**
 * Why a validator is being asked: the same token type may be presented in several roles. `client` = a
 * client assertion being checked for client authentication.
 */
export type ValidationRole = 'subject' | 'actor' | 'assertion' | 'client';

export interface ValidationContext {
  readonly role: ValidationRole;
  /** The token type URN the caller presented; one of the validator's `tokenTypes`. */
  readonly tokenType: TokenTypeUrn;
  /** This broker's issuer identifier: a token's `aud` must name it (or the token endpoint). */
  readonly brokerIssuer: string;
  readonly tokenEndpoint: string;
  readonly now: Date;
  /** Aborted when the broker's validation time budget is spent. Pass it to any I/O. */
  readonly signal: AbortSignal;
  /**
   * Only `brokerIssuer` and `tokenEndpoint` are acceptable audiences: ignore any extra audiences the
   * plugin was configured to accept. Set for the SPIFFE exchange door and for JWT bearer assertions
   * (RFC 7523 §3); core also refuses any identity whose audiences then name neither.
   */
  readonly brokerAudienceOnly?: boolean;
  /**
   * The authenticated client, when the token is a subject or actor token. A token the broker issued
   * itself may be exchanged by the client it names as audience.
   */
  readonly client?: AuthenticatedClient;
}

/**
 * How an identity may act for others (RFC 8693 `actor_token`): as a workload's SPIFFE JWT-SVID
 * (`workload`: the subject must be a SPIFFE ID of the trust domain named by the issuer), or as a token this
 * broker issued itself (`broker`: the issuer must be the broker). A validator declares which kind it can
 * support; the operator grants it (`delegation.actorTrust` in the broker config). Identities from
 * validators without a grant are refused as actors.
 */
export type ActorTrust = 'workload' | 'broker';

/**
 * Proves who a presented token speaks for. Throw `InvalidToken` for anything wrong with the token;
 * anything else thrown is treated as a plugin fault and the request is refused.
 */
export interface SubjectValidator {
  /** Token type URNs handled. Data, not a predicate: registries key on it and publish it. */
  readonly tokenTypes: readonly TokenTypeUrn[];
  /**
   * The actor trust this validator can support (see `ActorTrust`). Only a capability: core trusts its
   * identities to act only where the operator's config grants it.
   */
  readonly actorTrust?: ActorTrust;
  /**
   * The largest clock skew, in seconds, the validator tolerates past a token's expiry (0 when absent).
   * Core refuses any identity whose `expiresAt` plus this skew has passed, and remembers single-use
   * proofs for exactly that long.
   */
  readonly clockSkewSeconds?: number;
  /**
   * Lets core reuse this validator's verified identities when the same token is presented again (an
   * agent exchanging one token for several audiences). Absent: every presentation is validated. Declare
   * it only where validation has no side effect a reuse would skip (never for single-use proofs).
   */
  readonly caching?: ValidationCaching;
  validate(token: string, ctx: ValidationContext): Promise<VerifiedIdentity>;
}

/**
 * How core may reuse a validator's result. An entry is keyed by a SHA-256 of the token and everything in
 * the context a result depends on (token type, role, audience rule, presenting client); it lives until
 * the identity expires and at most the broker's `limits.verifiedTokens.maxAgeSeconds`, and dies with
 * the config generation that made it. Core's own checks (expiry, kill switch, policy) run on every
 * request, reused or not.
 */
export interface ValidationCaching {
  /**
   * Runs on every reuse, for what may change while a token stays valid (e.g. a revocation list).
   * Throw `InvalidToken` to refuse; the entry is dropped.
   */
  recheck?(identity: VerifiedIdentity, ctx: ValidationContext): Promise<void>;
}

/**
 * Adds policy attributes to identities another plugin verified (e.g. a directory lookup that turns an
 * email into a team). Runs after the validator, inside the same time budget; it cannot replace attributes
 * the validator set, and anything it throws refuses the request like a validator failure.
 */
export interface AttributeExtractor {
  /** Token types whose identities it enriches; every type when absent. */
  readonly tokenTypes?: readonly TokenTypeUrn[];
  extract(identity: VerifiedIdentity, ctx: ValidationContext): IdentityAttributes | Promise<IdentityAttributes>;
}

/**
 * Verifies client assertions of types core does not implement itself (RFC 7521 §4.2), e.g. a JWT-SVID
 * presented with `urn:ietf:params:oauth:client-assertion-type:jwt-spiffe`. It proves who the assertion
 * speaks for; core then maps that identity to a configured client, enforces lifetime and replay rules.
 * The assertion's audience must name only this broker (`ctx.brokerIssuer` or `ctx.tokenEndpoint`).
 */
export interface ClientAssertionVerifier {
  /** `client_assertion_type` values handled. */
  readonly assertionTypes: readonly string[];
  /** As for `SubjectValidator.clockSkewSeconds`: bounds acceptance and sets how long a `jti` is remembered. */
  readonly clockSkewSeconds?: number;
  /** Throw `InvalidToken` for anything wrong with the assertion; `ctx.role` is `client`. */
  verify(assertion: string, ctx: ValidationContext): Promise<VerifiedIdentity>;
}

export type ClientAuthMethod = 'private_key_jwt' | 'client_secret_basic' | 'client_secret_post' | 'spiffe_jwt' | 'none';

/** The OAuth client that made the request, after authentication. */
export interface AuthenticatedClient {
  readonly id: string;
  readonly authMethod: ClientAuthMethod;
  /** What a plugin-verified client assertion proved (a JWT-SVID's SPIFFE ID, trust domain, expiry). */
  readonly identity?: VerifiedIdentity;
}

/**
 * One party in a delegation chain, as an RFC 8693 §4.1 `act` claim names it. `act` nests the party
 * that acted before this one: the outermost entry is the current actor.
 */
export interface ActClaim {
  readonly sub: string;
  readonly iss?: string;
  /** The actor's SPIFFE ID, when it is a workload. */
  readonly spiffe_id?: string;
  readonly act?: ActClaim;
}

/** What policy allowed: the only input an issuer needs. */
export interface Grant {
  /** The OAuth grant type of the request. */
  readonly grantType: string;
  readonly client: AuthenticatedClient;
  readonly subject: VerifiedIdentity;
  readonly actor?: VerifiedIdentity;
  readonly audiences: readonly string[];
  readonly scopes: readonly string[];
  /** Lifetime decided by policy; issuers may shorten it, never extend it. */
  readonly lifetimeSeconds: number;
  readonly tokenType: TokenTypeUrn;
  /** Id of the policy rule that allowed the request. */
  readonly ruleId: string;
  /** Issuer-specific parameters from the rule (`grant.issuerParameters`), templates already filled. */
  readonly parameters: Readonly<Record<string, string | readonly string[]>>;
  /**
   * The delegation chain to record, current actor outermost (present only for delegation, or when the
   * subject token already carried one). An issuer that cannot carry it must refuse the grant.
   */
  readonly act?: ActClaim;
  /**
   * Extra claims policy maps into the issued token (`grant.claims`); never a registered claim. An issuer
   * that cannot carry them must refuse the grant.
   */
  readonly claims?: Readonly<Record<string, unknown>>;
}

export interface IssueContext {
  readonly brokerIssuer: string;
  readonly now: Date;
  readonly signal: AbortSignal;
}

export interface IssuedToken {
  readonly token: string;
  readonly issuedTokenType: TokenTypeUrn;
  /** RFC 8693 §2.2.1: `Bearer` for access tokens, `N_A` for anything that is not one. */
  readonly tokenType: 'Bearer' | 'N_A';
  readonly expiresIn: number;
  /** Identifier of the issued token, for the audit record. */
  readonly jti?: string;
  /** Who the issued token names, when the issuer chose it (a JWT-SVID's SPIFFE ID). */
  readonly subject?: string;
}

/** Mints the token a grant allows. */
export interface TokenIssuer {
  /** Requested token types handled (`requested_token_type`). */
  readonly tokenTypes: readonly TokenTypeUrn[];
  issue(grant: Grant, ctx: IssueContext): Promise<IssuedToken>;
  /**
   * The claims `issue` would put in the token, unsigned and without contacting anything (used by
   * `tessera policy explain`). Optional; must never have side effects.
   */
  preview?(grant: Grant, ctx: Omit<IssueContext, 'signal'>): Readonly<Record<string, unknown>>;
}
