import type { ServerResponse } from 'node:http';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose';
import { runExchangeCommand } from '@tessera/client';
import { WorkloadApiClient } from '@tessera/spiffe';
import { LoopbackIssuer, sendJson, startLoopbackServer, type LoopbackServer } from '@tessera/plugin-testkit';
import { accessTokenPlugin, startBroker, type RunningBroker } from '../e2e/support.js';
import { MOTO_ACCOUNT, MotoServer, requireMotoOrSkip } from '../../plugins/aws/test/moto.js';
import { spireRequired, spireUnavailableReason, startSpire, waitForDelegatedEntry, type Spire } from '../src/spire.js';

const unavailable = spireUnavailableReason() ?? (requireMotoOrSkip() ? undefined : 'moto is not installed');
const moto = requireMotoOrSkip();
const API = 'https://api.example.test';
const SVID_TYPE = 'urn:tessera:token-type:jwt-svid';
const TENANT = '3f2d8a61-0c4e-4b7a-9d52-7e1f0a6b9c11';
const OBJECT_ID = '02223b6b-aa1d-42d4-9ec0-1b2bb9194438';

/** Per cloud: the SPIFFE ID SPIRE registers for the workload, and the selectors policy derives for it. */
const WORKLOADS = {
  k8s: { id: 'spiffe://example.org/ns/payments/sa/api', selectors: ['k8s:ns:payments', 'k8s:sa:api'] },
  gcp: { id: 'spiffe://example.org/gcp/reports', selectors: ['gcp_iit:project-id:reports-prod'] },
  azure: { id: 'spiffe://example.org/azure/ledger', selectors: [`azure_msi:principal-id:${OBJECT_ID}`] },
  aws: { id: 'spiffe://example.org/aws/deployer', selectors: ['aws:role:deployer'] },
} as const;
type Cloud = keyof typeof WORKLOADS;

/**
 * Each cloud end to end, through the real plugins: the workload's own SDK gets its platform token
 * (`tessera exchange`), Tessera validates it with that cloud's plugin, and answers with an access token or
 * with a JWT-SVID the real SPIRE agent mints. Platforms are loopback stand-ins speaking their real
 * protocols: a Kubernetes issuer, the GCE metadata server, the App Service managed identity endpoint, and
 * moto's STS.
 */
describe('cloud identities in, access tokens and SPIRE JWT-SVIDs out', () => {
  let spire: Spire;
  let server: MotoServer;
  let kube: LoopbackIssuer;
  let google: LoopbackIssuer;
  let entra: LoopbackIssuer;
  let metadata: LoopbackServer;
  let msi: LoopbackServer;
  let running: RunningBroker;
  let dir: string;
  const saved = { ...process.env };

  beforeAll(async () => {
    if (unavailable) return;
    [spire, server, kube, google, entra] = await Promise.all([
      startSpire(),
      MotoServer.start(moto!),
      LoopbackIssuer.start({ alg: 'RS256' }),
      LoopbackIssuer.start({ alg: 'RS256', path: '/google' }),
      LoopbackIssuer.start({ alg: 'RS256', path: `/${TENANT}/v2.0` }),
    ]);
    for (const workload of Object.values(WORKLOADS)) await spire.createEntry(workload.id, workload.selectors);
    await waitForDelegated(spire, Object.values(WORKLOADS).map((workload) => workload.selectors));
    const deployer = await server.assumeRole({ roleName: 'deployer', sessionName: 'release-9' });
    await server.verifySignatures();

    running = await startBroker((issuer) => ({
      clients: [{ id: 'workloads', auth: { method: 'none' } }],
      plugins: [
        { use: '@tessera/plugin-kubernetes', config: { clusters: [{ name: 'prod', mode: 'offline', issuer: kube.issuer }] } },
        { use: '@tessera/plugin-gcp', config: { issuers: [google.issuer], jwksUri: google.jwksUri, projects: ['reports-prod'] } },
        { use: '@tessera/plugin-azure', config: { tenants: [TENANT], audiences: [issuer], authority: new URL(entra.issuer).origin, tokenVersions: ['2.0'] } },
        { use: '@tessera/plugin-aws', config: { accounts: [MOTO_ACCOUNT], globalEndpoint: false, endpoints: [{ url: server.url, region: 'us-east-1' }] } },
        { use: '@tessera/plugin-spire-jwt-svid', config: { adminSocket: `unix://${spire.adminSocket}` } },
        accessTokenPlugin,
      ],
      policy: {
        rules: [
          ...(['k8s', 'gcp', 'azure', 'aws'] as const).map((cloud) => ({
            id: `${cloud}-to-spiffe`,
            match: { requestedTokenTypes: [SVID_TYPE], attributes: { [SPIFFE_MATCH[cloud][0]]: SPIFFE_MATCH[cloud][1] } },
            grant: {
              audiences: ['spiffe://example.org/**'],
              maxLifetimeSeconds: 600,
              allowLifetimeBeyondSubject: true,
              issuerParameters: { selectors: SELECTOR_TEMPLATES[cloud] },
            },
          })),
          { id: 'clouds-to-api', grant: { audiences: [API], maxLifetimeSeconds: 300, allowLifetimeBeyondSubject: true } },
        ],
      },
    }));

    dir = await mkdtemp(join(tmpdir(), 'tessera-clouds-'));
    await writeFile(
      join(dir, 'k8s-token'),
      await kube.mint({
        sub: 'system:serviceaccount:payments:api',
        aud: running.issuer,
        'kubernetes.io': { namespace: 'payments', serviceaccount: { name: 'api', uid: 'sa-uid-1' }, pod: { name: 'api-7d9', uid: 'pod-uid-1' } },
      }),
    );
    metadata = await startLoopbackServer((request, response) => {
      const url = new URL(request.url ?? '/', 'http://metadata');
      if (request.headers['metadata-flavor'] !== 'Google' || !url.pathname.endsWith('/identity')) return sendJson(response, 404, {});
      const claims = { sub: '104479897743394244856', email: 'reports@reports-prod.iam.gserviceaccount.com', email_verified: true, google: { compute_engine: { project_id: 'reports-prod', project_number: 42, zone: 'europe-west1-b', instance_id: '7', instance_name: 'reports-1' } } };
      void google.mint({ ...claims, aud: url.searchParams.get('audience') ?? '' }, { expiresIn: 3_600 }).then((token) => sendText(response, token));
    });
    msi = await startLoopbackServer((request, response) => {
      const resource = new URL(request.url ?? '/', 'http://msi').searchParams.get('resource') ?? '';
      const v2Issuer = entra.issuer;
      const claims = { iss: v2Issuer, sub: OBJECT_ID, oid: OBJECT_ID, tid: TENANT, aud: resource, azp: '75dbe77f-10a3-4e59-85fd-8c127544f17c', azpacr: '2', idtyp: 'app', ver: '2.0' };
      void entra.mint(claims, { expiresIn: 3_600 }).then((token) => sendJson(response, 200, { access_token: token, expires_on: String(Math.floor(Date.now() / 1000) + 3_600), resource, token_type: 'Bearer' }));
    });
    delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
    Object.assign(process.env, {
      GCE_METADATA_HOST: `127.0.0.1:${metadata.port}`,
      METADATA_SERVER_DETECTION: 'assume-present',
      IDENTITY_ENDPOINT: `http://127.0.0.1:${msi.port}/msi/token`,
      IDENTITY_HEADER: 'msi-secret',
      AWS_ACCESS_KEY_ID: deployer.accessKeyId,
      AWS_SECRET_ACCESS_KEY: deployer.secretAccessKey,
      AWS_SESSION_TOKEN: deployer.sessionToken,
      AWS_REGION: 'us-east-1',
    });
  }, 240_000);

  afterAll(async () => {
    process.env = saved;
    await running?.close();
    await Promise.all([spire?.stop(), server?.close(), kube?.close(), google?.close(), entra?.close(), metadata?.close(), msi?.close()]);
  }, 60_000);

  beforeEach((ctx) => {
    if (unavailable && (spireRequired() || process.env.TESSERA_REQUIRE_MOTO === '1')) throw new Error(`interop required but ${unavailable}`);
    if (unavailable) ctx.skip(unavailable);
  });

  const exchange = async (cloud: Cloud, extra: string[]) => {
    let printed = '';
    const source = cloud === 'k8s' ? ['--token-file', join(dir, 'k8s-token')] : cloud === 'aws' ? ['--aws-sts-endpoint', `${server.url}/`] : [];
    const code = await runExchangeCommand(['--broker', running.issuer, '--client-id', 'workloads', '--from', cloud, ...source, ...extra], (text) => void (printed += text));
    return { code, token: printed.trim() };
  };

  for (const cloud of ['k8s', 'gcp', 'azure', 'aws'] as const) {
    it(`${cloud}: the workload's own identity becomes an access token`, async () => {
      const { code, token } = await exchange(cloud, ['--audience', API]);
      expect(code).toBe(0);
      expect(decodeJwt(token)).toMatchObject({ sub: EXPECTED_SUBJECT[cloud], aud: API });
    });

    it(`${cloud}: the workload's own identity becomes a JWT-SVID minted by SPIRE`, async () => {
      const { code, token } = await exchange(cloud, ['--audience', 'spiffe://example.org/db', '--requested-token-type', SVID_TYPE]);
      expect(code).toBe(0);
      const { payload } = await jwtVerify(token, createLocalJWKSet(await spire.bundleJwks()), { audience: 'spiffe://example.org/db' });
      expect(payload.sub).toBe(WORKLOADS[cloud].id);
      // The agent's own ValidateJWTSVID agrees.
      const workload = new WorkloadApiClient(`unix://${spire.workloadSocket}`);
      try {
        expect((await workload.validateJwtSvid(token, 'spiffe://example.org/db')).spiffeId).toBe(WORKLOADS[cloud].id);
      } finally {
        workload.close();
      }
    });
  }
});

/** Which verified attribute marks each cloud's identities, for its SPIFFE rule. */
const SPIFFE_MATCH: Record<Cloud, readonly [string, string]> = {
  k8s: ['k8s.namespace', 'payments'],
  gcp: ['gcp.projectId', 'reports-prod'],
  azure: ['azure.tenantId', TENANT],
  aws: ['aws.roleName', 'deployer'],
};
const SELECTOR_TEMPLATES: Record<Cloud, readonly string[]> = {
  k8s: ['k8s:ns:{attributes.k8s.namespace}', 'k8s:sa:{attributes.k8s.serviceAccount}'],
  gcp: ['gcp_iit:project-id:{attributes.gcp.projectId}'],
  azure: ['azure_msi:principal-id:{attributes.azure.objectId}'],
  aws: ['aws:role:{attributes.aws.roleName}'],
};
const EXPECTED_SUBJECT: Record<Cloud, string> = {
  k8s: 'system:serviceaccount:payments:api',
  gcp: '104479897743394244856',
  azure: OBJECT_ID,
  aws: `arn:aws:iam::${MOTO_ACCOUNT}:role/deployer`,
};

function sendText(response: ServerResponse, text: string): void {
  response.writeHead(200, { 'content-type': 'text/plain', 'metadata-flavor': 'Google' });
  response.end(text);
}

/** Entries with selectors no local process has reach the agent only through the Delegated Identity API. */
async function waitForDelegated(spire: Spire, selectorSets: readonly (readonly string[])[]): Promise<void> {
  for (const selectors of selectorSets) await waitForDelegatedEntry(spire.adminSocket, selectors);
}
