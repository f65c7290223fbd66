import { z } from 'zod';
import {
  definePlugin,
  InvalidRequest,
  InvalidScope,
  ServerError,
  TemporarilyUnavailable,
  TOKEN_TYPE_JWT_SVID,
  TOKEN_TYPE_STARFLY_SPIFFE_SVID,
  tokens,
  type Grant,
  type IssueContext,
  type IssuedToken,
  type Logger,
  type TokenIssuer,
  type TokenTypeUrn,
} from '@tessera/plugin-sdk';
import { DelegatedIdentityClient, isSpiffeId, parseSelector, SelectorError, WorkloadApiError, type Selector } from '@tessera/spiffe';

export const spireJwtSvidConfigSchema = z
  .object({
    adminSocket: z
      .string()
      .min(1)
      .describe("The SPIRE agent's admin socket (agent config admin_socket_path), as unix:///path or tcp://ip:port"),
    tokenTypes: z
      .array(z.string().regex(/^urn:\S+$/, 'must be a urn:'))
      .min(1)
      .default([TOKEN_TYPE_JWT_SVID, TOKEN_TYPE_STARFLY_SPIFFE_SVID])
      .describe('requested_token_type values answered with a JWT-SVID'),
    timeoutMs: z.number().int().positive().max(30_000).default(5_000),
    checkAtStartup: z.boolean().default(true).describe('Ask the agent at startup whether Tessera is an authorized delegate'),
  })
  .strict();

export type SpireJwtSvidConfig = z.output<typeof spireJwtSvidConfigSchema>;

const NO_OWN_ENTRY =
  "the SPIRE agent has no registration entry for Tessera's own process: register one (e.g. unix:uid:<tessera uid>) whose SPIFFE ID is in the agent's authorized_delegates";
const NOT_DELEGATE =
  "the SPIRE agent does not accept Tessera as a delegate: add Tessera's SPIFFE ID to authorized_delegates in the agent's config (agent { authorized_delegates = [...] }) and register an entry for Tessera's own workload";

/**
 * Issues JWT-SVIDs by asking the SPIRE agent (Delegated Identity API, FetchJWTSVIDs) on behalf of the
 * workload policy names: `grant.parameters.selectors` (e.g. `k8s:ns:payments`) and, when several
 * registration entries match, `grant.parameters.spiffeId`. SPIRE signs; Tessera never holds the key.
 * SPIRE decides the lifetime, so a grant shorter than the SVID is refused rather than exceeded, and a
 * JWT-SVID cannot carry scopes.
 */
export class SpireJwtSvidIssuer implements TokenIssuer {
  readonly tokenTypes: readonly TokenTypeUrn[];

  constructor(
    config: SpireJwtSvidConfig,
    private readonly client: Pick<DelegatedIdentityClient, 'fetchJwtSvids'>,
    private readonly log: Logger,
  ) {
    this.tokenTypes = config.tokenTypes as TokenTypeUrn[];
  }

  async issue(grant: Grant, ctx: IssueContext): Promise<IssuedToken> {
    if (grant.scopes.length > 0) throw new InvalidScope('scope cannot be carried by a JWT-SVID', { detail: 'spire: scopes granted for a JWT-SVID' });
    // SPIRE signs the SVID and decides its claims: a chain or mapped claims would be silently lost.
    if (grant.act) throw InvalidRequest.policy('spire: a JWT-SVID cannot carry a delegation chain (act)');
    if (grant.claims) throw InvalidRequest.policy('spire: a JWT-SVID cannot carry mapped claims (grant.claims)');
    const selectors = readSelectors(grant);
    const wanted = readSpiffeId(grant);
    let svids;
    try {
      svids = await this.client.fetchJwtSvids({ audience: grant.audiences, selectors, signal: ctx.signal });
    } catch (error) {
      throw this.#agentError(error);
    }
    const candidates = wanted === undefined ? svids : svids.filter((svid) => svid.spiffeId === wanted);
    if (candidates.length !== 1) {
      const detail = candidates.length === 0 ? 'spire: no registration entry for the SPIFFE ID policy named' : 'spire: several registration entries match; set issuerParameters.spiffeId';
      throw InvalidRequest.policy(detail);
    }
    const svid = candidates[0]!;
    const expiresIn = Math.floor((svid.expiresAt.getTime() - ctx.now.getTime()) / 1000);
    if (expiresIn <= 0) throw new TemporarilyUnavailable('token issuer is unavailable, retry later', { detail: 'spire: agent returned an expired JWT-SVID' });
    // SPIRE chooses the TTL; Tessera cannot shorten a signed token, so it refuses instead of widening.
    if (expiresIn > grant.lifetimeSeconds) {
      throw InvalidRequest.policy(`spire: JWT-SVID lives ${expiresIn}s, longer than the ${grant.lifetimeSeconds}s granted (raise maxLifetimeSeconds or lower SPIRE's default_jwt_svid_ttl)`);
    }
    return { token: svid.token, issuedTokenType: grant.tokenType, tokenType: 'N_A', expiresIn, subject: svid.spiffeId };
  }

  /** SPIRE chooses the SPIFFE ID (from the selectors, unless policy names it), `exp` and `iat`. */
  preview(grant: Grant): Readonly<Record<string, unknown>> {
    const wanted = grant.parameters.spiffeId;
    return { ...(typeof wanted === 'string' ? { sub: wanted } : {}), aud: [...grant.audiences] };
  }

  #agentError(error: unknown): Error {
    if (!(error instanceof WorkloadApiError)) return error instanceof Error ? error : new Error(String(error));
    switch (error.code) {
      case 'no_identity':
        return InvalidRequest.policy('spire: no registration entry matches the selectors');
      case 'not_authorized_delegate':
        this.log.error({ plugin: 'spire-jwt-svid' }, NOT_DELEGATE);
        return new TemporarilyUnavailable('token issuer is unavailable, retry later', { detail: 'spire: not an authorized delegate' });
      case 'invalid_argument':
      case 'invalid_response':
      case 'unimplemented':
        // Tessera sent or read something SPIRE did not expect: a broker bug, not the client's or an outage.
        return new ServerError(undefined, { detail: `spire: agent answered ${error.code}` });
      default:
        // Unreachable, hung (cancelled by the issue budget), attestation trouble (internal), unknown denial:
        // the agent may recover, and the client did nothing wrong.
        this.log.warn({ plugin: 'spire-jwt-svid', code: error.code }, 'SPIRE agent admin API did not answer');
        return new TemporarilyUnavailable('token issuer is unavailable, retry later', { detail: `spire: agent ${error.code}`, retryAfterSeconds: 5 });
    }
  }
}

/** `issuerParameters.spiffeId`, when policy names one: a single, valid SPIFFE ID. */
function readSpiffeId(grant: Grant): string | undefined {
  const raw = grant.parameters.spiffeId;
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string' || !isSpiffeId(raw)) throw InvalidRequest.policy('spire: issuerParameters.spiffeId is not one SPIFFE ID');
  return raw;
}

function readSelectors(grant: Grant): Selector[] {
  const raw = grant.parameters.selectors;
  const list = raw === undefined ? [] : typeof raw === 'string' ? [raw] : raw;
  if (list.length === 0) throw InvalidRequest.policy('spire: the rule has no issuerParameters.selectors');
  try {
    return list.map((text) => parseSelector(text));
  } catch (error) {
    if (error instanceof SelectorError) throw InvalidRequest.policy(`spire: selector ${error.reason}`);
    throw error;
  }
}

export default definePlugin({
  name: 'spire-jwt-svid',
  version: '0.1.0',
  apiVersion: '^1.2',
  description: 'Issues JWT-SVIDs minted by a SPIRE agent (Delegated Identity API) for the workload policy names',
  config: spireJwtSvidConfigSchema,
  deps: { log: tokens.logger },
  async init({ config, deps, purpose }) {
    const client = new DelegatedIdentityClient(config.adminSocket, { timeoutMs: config.timeoutMs });
    // A read-only command (config validate, policy explain) never talks to the agent.
    if (config.checkAtStartup && purpose !== 'check') {
      // Asking for Tessera's own SVIDs by PID: success means the agent knows Tessera and accepts it as a
      // delegate; "no identity" means Tessera itself has no entry (selectors could not tell these apart).
      try {
        await client.fetchJwtSvids({ audience: ['tessera-startup-check'], pid: process.pid });
      } catch (error) {
        const code = error instanceof WorkloadApiError ? error.code : 'unknown';
        if (code === 'not_authorized_delegate' || code === 'no_identity') {
          client.close();
          throw new Error(`plugin spire-jwt-svid: ${code === 'no_identity' ? NO_OWN_ENTRY : NOT_DELEGATE}`);
        }
        deps.log.warn({ plugin: 'spire-jwt-svid', code }, 'SPIRE agent admin API not reachable at startup; JWT-SVID requests get 503 until it is');
      }
    }
    return { issuers: [new SpireJwtSvidIssuer(config, client, deps.log)], close: () => client.close() };
  },
});
