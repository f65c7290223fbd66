/**
 * Tessera minting JWT-SVIDs through a real SPIRE agent (Delegated Identity API over gRPC): an OIDC
 * token with Kubernetes-style claims in, a JWT-SVID for the workload's registered SPIFFE ID out. The
 * agent runs unpinned (it is part of the system under test, as it would be on a node).
 */
import { TOKEN_TYPE_JWT_SVID as JWT_SVID } from '@tessera/plugin-sdk';
import { spireUnavailableReason, startSpire, waitForDelegatedEntry } from '../spire.js';
import { benchConfig, serveCli, stopChild, TesseraBodies, type TesseraBenchDeps } from './tessera.js';
import type { BenchSystem, StartOptions, Unavailable } from './system.js';

const WORKLOAD_ID = 'spiffe://example.org/ns/payments/sa/api';
const SELECTORS = ['k8s:ns:payments', 'k8s:sa:api'];

export async function startTesseraSpire(options: StartOptions, deps: TesseraBenchDeps, version: string): Promise<BenchSystem | Unavailable> {
  const unavailable = spireUnavailableReason();
  if (unavailable) return { unavailable };
  const spire = await startSpire();
  try {
    await spire.createEntry(WORKLOAD_ID, SELECTORS);
    await waitForDelegatedEntry(spire.adminSocket, SELECTORS);
    const config = (issuer: string) => {
      const base = benchConfig(issuer, deps, options.workDir);
      return {
        ...base,
        plugins: [
          { use: '@tessera/plugin-oidc', config: { issuers: [{ issuer: deps.idp.issuer, jwksUri: deps.idp.jwksUri, attributes: { 'k8s.namespace': 'namespace', 'k8s.serviceAccount': 'serviceaccount' } }] } },
          { use: '@tessera/plugin-spire-jwt-svid', config: { adminSocket: `unix://${spire.adminSocket}` } },
        ],
        policy: {
          rules: [
            {
              id: 'k8s-to-spiffe',
              match: { issuers: [deps.idp.issuer], requestedTokenTypes: [JWT_SVID] },
              grant: { audiences: ['spiffe://example.org/**'], maxLifetimeSeconds: 600, allowLifetimeBeyondSubject: true, issuerParameters: { selectors: ['k8s:ns:{attributes.k8s.namespace}', 'k8s:sa:{attributes.k8s.serviceAccount}'] } },
            },
          ],
        },
      };
    };
    const { child, issuer } = await serveCli(config, options);
    const bodies = new TesseraBodies(issuer, deps);
    const subject = bodies.subjectToken({ sub: 'system:serviceaccount:payments:api', namespace: 'payments', serviceaccount: 'api' });
    return {
      name: 'tessera + SPIRE',
      version: `${version}; SPIRE agent via the Delegated Identity API`,
      pid: child.pid!,
      scenarios: [
        {
          name: 'tessera: JWT-SVID via SPIRE',
          url: bodies.tokenEndpoint,
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          bodies: async (count) => Array.from({ length: count }, () => bodies.exchange(subject, 'spiffe://example.org/billing', { requested_token_type: JWT_SVID, scope: '' })),
        },
      ],
      stop: async () => {
        await stopChild(child);
        await spire.stop();
      },
    };
  } catch (error) {
    await spire.stop();
    throw error;
  }
}
