import { z } from 'zod';
import { BackoffMemo, fetchableUrl, InvalidToken, TemporarilyUnavailable, type HttpFetcher } from '@tessera/plugin-sdk';

export type TokenVersion = '1.0' | '2.0';

/** One token version of one allowed tenant: the exact `iss` its tokens carry and where its keys are described. */
export interface TenantEndpoint {
  readonly tenantId: string;
  readonly version: TokenVersion;
  readonly issuer: string;
  readonly discoveryUrl: string;
}

/**
 * The endpoints of one tenant, built from its id, never from a multi-tenant template. Microsoft Entra
 * (access-tokens, "v1.0 and v2.0 tokens"): a v1.0 token is checked against the v1.0 metadata
 * (`{authority}/{tid}/.well-known/openid-configuration`, issuer `https://sts.windows.net/{tid}/`), a v2.0
 * token against the v2.0 metadata (`{authority}/{tid}/v2.0/.well-known/openid-configuration`, issuer
 * `{authority}/{tid}/v2.0`). The v1.0 issuer is not under the authority, so JwtVerifier's
 * issuer-relative discovery cannot find it; hence this module.
 */
export function tenantEndpoints(tenantId: string, versions: readonly TokenVersion[], bases: { authority: string; v1IssuerBase: string }): TenantEndpoint[] {
  return versions.map((version) =>
    version === '1.0'
      ? { tenantId, version, issuer: `${bases.v1IssuerBase}/${tenantId}/`, discoveryUrl: `${bases.authority}/${tenantId}/.well-known/openid-configuration` }
      : { tenantId, version, issuer: `${bases.authority}/${tenantId}/v2.0`, discoveryUrl: `${bases.authority}/${tenantId}/v2.0/.well-known/openid-configuration` },
  );
}

const discoverySchema = z.object({ issuer: z.string(), jwks_uri: fetchableUrl });

/**
 * Finds each endpoint's JWKS through its own tenant's discovery document. The document must name exactly
 * the pinned issuer (OIDC Discovery §4.3) and keep its keys on the authority's origin. One attempt per
 * endpoint is shared by every caller; a failure is answered from cache until its backoff (1 s doubling
 * to 60 s) ends, so forged tokens naming a dark tenant cannot make the broker fetch once per request.
 */
export class TenantDiscovery {
  readonly #attempts = new BackoffMemo<string>();

  constructor(
    private readonly http: HttpFetcher,
    private readonly authorityOrigin: string,
  ) {}

  jwksUriOf(endpoint: TenantEndpoint): Promise<string> {
    return this.#attempts.get(endpoint.issuer, () => this.#discover(endpoint));
  }

  /** Drops a failed attempt so the next token retries at once: a failed warm-up must not impose a backoff. */
  forget(endpoint: TenantEndpoint): void {
    this.#attempts.forgetFailure(endpoint.issuer);
  }

  async #discover(endpoint: TenantEndpoint): Promise<string> {
    const document = await this.http.getJson(endpoint.discoveryUrl).catch((cause: unknown) => {
      // The tenant is trusted but its metadata is unreachable: an upstream outage, not a bad token.
      throw new TemporarilyUnavailable('token issuer is unavailable, retry later', { detail: `discovery unavailable: ${this.authorityOrigin}`, cause });
    });
    const parsed = discoverySchema.safeParse(document);
    if (!parsed.success || parsed.data.issuer !== endpoint.issuer) throw new InvalidToken('untrusted_issuer', 'discovery document mismatch');
    // Keys come from the authority the operator configured, never from a host the document points elsewhere.
    if (new URL(parsed.data.jwks_uri).origin !== this.authorityOrigin) throw new InvalidToken('untrusted_issuer', 'jwks_uri outside the authority');
    return parsed.data.jwks_uri;
  }
}
