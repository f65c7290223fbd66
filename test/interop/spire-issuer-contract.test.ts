import { describe, it } from 'vitest';
import { TOKEN_TYPE_JWT_SVID } from '@tessera/plugin-sdk';
import { describeIssuerContract } from '@tessera/plugin-testkit/contract';
import { DelegatedIdentityClient, parseSelector } from '@tessera/spiffe';
import { spireRequired, spireUnavailableReason, startSpire } from '../src/spire.js';

const unavailable = spireUnavailableReason();
const WORKLOAD = 'spiffe://example.org/ns/contract/sa/api';
const SELECTORS = ['k8s:ns:contract', 'k8s:sa:api'];

// Skipped only where SPIRE is not built (local runs without scripts/install-spire.sh); CI sets
// TESSERA_REQUIRE_SPIRE=1, so the contract runs there and a missing SPIRE fails its setup instead.
if (unavailable && !spireRequired()) {
  describe.skip(`issuer contract: @tessera/plugin-spire-jwt-svid (${unavailable})`, () => it('needs SPIRE', () => undefined));
} else {
  describeIssuerContract('@tessera/plugin-spire-jwt-svid against a real SPIRE agent', async () => {
    if (unavailable) throw new Error(`TESSERA_REQUIRE_SPIRE=1 but ${unavailable}`);
    const spire = await startSpire();
    await spire.createEntry(WORKLOAD, SELECTORS);
    // Wait until the agent serves the entry through the Delegated Identity API.
    const admin = new DelegatedIdentityClient(`unix://${spire.adminSocket}`);
    for (let attempt = 0; ; attempt++) {
      try {
        await admin.fetchJwtSvids({ audience: ['probe'], selectors: SELECTORS.map(parseSelector) });
        break;
      } catch (error) {
        if (attempt > 240) throw error;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
    admin.close();
    return {
      tokenType: TOKEN_TYPE_JWT_SVID,
      plugin: () => ({ use: '@tessera/plugin-spire-jwt-svid', config: { adminSocket: `unix://${spire.adminSocket}` } }),
      // The JWT-SVIDs SPIRE minted verify with the trust domain's bundle, streamed from the Workload API.
      roundTrip: (_broker, audiences) => ({
        tokenType: TOKEN_TYPE_JWT_SVID,
        plugin: {
          use: '@tessera/plugin-spiffe',
          config: { trustDomains: [{ name: 'example.org', bundle: { workloadApi: true } }], workloadApi: { address: `unix://${spire.workloadSocket}` }, allowedAudiences: [...audiences], clientAuthentication: false },
        },
      }),
      parameters: { selectors: SELECTORS },
      expectedSubject: () => WORKLOAD,
      lifetimeSeconds: 600,
      carriesScopes: false,
      reusesTokens: true,
      close: () => spire.stop(),
    };
  });
}
