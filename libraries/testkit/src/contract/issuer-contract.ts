import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  GRANT_TYPE_TOKEN_EXCHANGE,
  OAuthError,
  TOKEN_TYPE_JWT,
  type Grant,
  type IssuedToken,
  type TokenIssuer,
  type TokenTypeUrn,
  type VerifiedIdentity,
} from '@tessera/plugin-sdk';
import { CONTRACT_CLIENT_ID, startContractBroker, type ContractBroker, type PluginUnderTest } from './harness.js';

interface BrokerAddress {
  readonly issuer: string;
  readonly tokenEndpoint: string;
}

/** What an issuer plugin supplies so the kit can exercise it. */
export interface IssuerFixture {
  /** The `requested_token_type` the issuer answers. */
  readonly tokenType: TokenTypeUrn;
  plugin(broker: BrokerAddress): PluginUnderTest;
  /**
   * The validator that accepts what the issuer mints: configured to trust this broker and to accept the
   * granted `audiences`. Issued tokens must verify with it.
   */
  roundTrip(broker: BrokerAddress, audiences: readonly string[]): { readonly plugin: PluginUnderTest; readonly tokenType: TokenTypeUrn };
  /** Lifetime of the main grant; at least the token lifetime of issuers that cannot shorten tokens. Default 120. */
  readonly lifetimeSeconds?: number;
  /** `grant.parameters` as policy would fill them for this issuer (e.g. SPIRE selectors). Default none. */
  readonly parameters?: Grant['parameters'];
  /** The subject the issued token names for `grant` (default: the grant's subject). */
  expectedSubject?(grant: Grant): string;
  /** Scopes carried by the issued token, read from its verified identity (default: the space-separated `scope` claim). */
  scopesOf?(identity: VerifiedIdentity): readonly string[];
  /**
   * False for token formats with no place for scopes (a JWT-SVID): the issuer must then refuse a grant
   * that has scopes, with an OAuth error, instead of dropping them. Default true.
   */
  readonly carriesScopes?: boolean;
  /**
   * True when the issuer hands out a cached token for the same grant (SPIRE caches JWT-SVIDs until they
   * near expiry), so two issues may return the same token. Default false.
   */
  readonly reusesTokens?: boolean;
  close?(): Promise<void>;
}

const AUDIENCES = ['https://api.contract.example.test', 'https://other.contract.example.test'];

/** The contract every token issuer meets: what it mints verifies, and says exactly what was granted. */
export function describeIssuerContract(name: string, setup: () => Promise<IssuerFixture>): void {
  describe(`issuer contract: ${name}`, () => {
    let fixture: IssuerFixture;
    let running: ContractBroker;
    let issuer: TokenIssuer;
    let roundTripType: TokenTypeUrn;

    beforeAll(async () => {
      fixture = await setup();
      running = await startContractBroker((address) => {
        const roundTrip = fixture.roundTrip({ issuer: address, tokenEndpoint: `${address}/token` }, AUDIENCES);
        roundTripType = roundTrip.tokenType;
        return { plugins: [fixture.plugin({ issuer: address, tokenEndpoint: `${address}/token` }), roundTrip.plugin] };
      });
      issuer = running.issuerFor(fixture.tokenType);
    });
    afterAll(async () => {
      await running?.close();
      await fixture?.close?.();
    });

    const grant = (overrides: Partial<Grant> = {}): Grant => {
      const now = Date.now();
      const subject: VerifiedIdentity = {
        issuer: 'https://idp.contract.example.test',
        subject: 'contract-subject',
        audiences: [running.issuer],
        expiresAt: new Date(now + 3_600_000),
        tokenType: TOKEN_TYPE_JWT,
        claims: { iss: 'https://idp.contract.example.test', sub: 'contract-subject' },
        attributes: {},
      };
      return {
        grantType: GRANT_TYPE_TOKEN_EXCHANGE,
        client: { id: CONTRACT_CLIENT_ID, authMethod: 'none' },
        subject,
        audiences: AUDIENCES,
        scopes: fixture.carriesScopes === false ? [] : ['contract.read', 'contract.write'],
        lifetimeSeconds: fixture.lifetimeSeconds ?? 120,
        tokenType: fixture.tokenType,
        ruleId: 'contract',
        parameters: fixture.parameters ?? {},
        ...overrides,
      };
    };
    const issue = (granted: Grant) => issuer.issue(granted, { brokerIssuer: running.issuer, now: new Date(), signal: AbortSignal.timeout(5_000) });
    const verify = (token: string) =>
      running.validatorFor(roundTripType).validate(token, {
        role: 'subject',
        tokenType: roundTripType,
        brokerIssuer: running.issuer,
        tokenEndpoint: running.tokenEndpoint,
        now: new Date(),
        signal: AbortSignal.timeout(5_000),
      });
    const scopesOf = (identity: VerifiedIdentity) =>
      fixture.scopesOf?.(identity) ?? (typeof identity.claims.scope === 'string' ? identity.claims.scope.split(' ').filter(Boolean) : []);

    it('mints a token that verifies and carries exactly the granted subject, audiences, scopes and lifetime', async () => {
      const granted = grant();
      const before = Date.now();
      const issued = await issue(granted);
      expect(issued.issuedTokenType).toBe(fixture.tokenType);
      expect(['Bearer', 'N_A']).toContain(issued.tokenType);
      expect(Number.isInteger(issued.expiresIn)).toBe(true);
      expect(issued.expiresIn).toBeGreaterThan(0);
      expect(issued.expiresIn).toBeLessThanOrEqual(granted.lifetimeSeconds);

      const identity = await verify(issued.token);
      expect(identity.subject).toBe(fixture.expectedSubject?.(granted) ?? granted.subject.subject);
      expect([...identity.audiences].sort()).toEqual([...granted.audiences].sort());
      expect([...scopesOf(identity)].sort()).toEqual([...granted.scopes].sort());
      // expires_in tells the client the truth about the token's exp (whole seconds, either side of the call).
      const expiresAt = identity.expiresAt.getTime();
      expect(expiresAt).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 + (issued.expiresIn - 1) * 1000);
      expect(expiresAt).toBeLessThanOrEqual(Date.now() + (issued.expiresIn + 1) * 1000);
    });

    it('never outlives a shorter grant: it shortens the token or refuses with an OAuth error', async () => {
      const outcome = await issue(grant({ lifetimeSeconds: 30 })).catch((error: unknown) => error);
      if (outcome instanceof Error) {
        // An issuer that cannot choose the lifetime (SPIRE decides it) must refuse, as a client error.
        expect(outcome).toBeInstanceOf(OAuthError);
        expect((outcome as OAuthError).status).toBeLessThan(500);
        return;
      }
      const issued = outcome as IssuedToken;
      expect(issued.expiresIn).toBeGreaterThan(0);
      expect(issued.expiresIn).toBeLessThanOrEqual(30);
      const identity = await verify(issued.token);
      expect(identity.expiresAt.getTime()).toBeLessThanOrEqual(Date.now() + 31_000);
    });

    it('grants no scope when none was granted, and never drops granted scopes', async () => {
      const identity = await verify((await issue(grant({ scopes: [] }))).token);
      expect(scopesOf(identity)).toEqual([]);
      if (fixture.carriesScopes === false) {
        const refused = await issue(grant({ scopes: ['contract.read'] })).catch((error: unknown) => error);
        expect(refused).toBeInstanceOf(OAuthError);
        expect((refused as OAuthError).status).toBeLessThan(500);
      }
    });

    it('mints a distinct token each time', async ({ skip }) => {
      if (fixture.reusesTokens) return skip('the issuer hands out cached tokens by design');
      const [first, second] = await Promise.all([issue(grant()), issue(grant())]);
      expect(first!.token).not.toBe(second!.token);
      if (first!.jti !== undefined) expect(first!.jti).not.toBe(second!.jti);
    });
  });
}
