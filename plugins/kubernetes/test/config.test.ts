import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kubernetesConfigSchema, TOKEN_TYPE_KUBERNETES_SA } from '../src/index.js';
import { startBroker } from './broker.js';
import { writeKubeconfig } from './fixtures.js';

const offline = (name: string, issuer: string, extra: Record<string, unknown> = {}) => ({ name, mode: 'offline', issuer, ...extra });
const review = (name: string, issuer: string, extra: Record<string, unknown> = {}) => ({ name, mode: 'tokenReview', issuer, kubeconfig: 'kubeconfig', ...extra });

/** Every problem the schema reports, as `path: message`. */
function problems(config: unknown): string[] {
  const result = kubernetesConfigSchema.safeParse(config);
  return result.success ? [] : result.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
}

describe('config schema', () => {
  it('applies strict defaults', () => {
    const config = kubernetesConfigSchema.parse({ clusters: [offline('a', 'https://oidc.a.example')] });
    expect(config.tokenTypes).toEqual([TOKEN_TYPE_KUBERNETES_SA]);
    expect(config.clusters[0]).toMatchObject({ allowLegacyTokens: false, allowedAudiences: [], algorithms: ['RS256', 'ES256'], maxTokenLifetimeSeconds: 86_400 });
  });

  it('refuses incoherent clusters', () => {
    expect(problems({ clusters: [] })).toHaveLength(1);
    expect(problems({ clusters: [{ name: 'a', issuer: 'https://a' }] })).toHaveLength(1); // mode is required
    expect(problems({ clusters: [offline('a', 'https://a', { jwksUri: 'https://a/jwks', jwksFile: 'a.json' })] })).toEqual(['clusters.0.jwksFile: set jwksUri or jwksFile, not both']);
    expect(problems({ clusters: [offline('a', 'https://a', { jwksUri: 'http://a.example/jwks' })] })[0]).toMatch(/^clusters\.0\.jwksUri: must be an https URL/);
    expect(problems({ clusters: [offline('a', 'https://a', { allowLegacyTokens: true })] })[0]).toMatch(/^clusters\.0\.allowLegacyTokens: offline mode cannot accept legacy tokens/);
    expect(problems({ clusters: [offline('a', 'https://a', { kubeconfig: 'x' })] })).toHaveLength(1);
    expect(problems({ clusters: [review('a', 'https://a', { kubeconfig: undefined })] })).toEqual(['clusters.0.kubeconfig: set exactly one of kubeconfig or inCluster: true']);
    expect(problems({ clusters: [review('a', 'https://a', { inCluster: true })] })).toEqual(['clusters.0.kubeconfig: set exactly one of kubeconfig or inCluster: true']);
    expect(problems({ clusters: [review('a', 'https://a', { kubeconfig: undefined, inCluster: true, context: 'x' })] })).toEqual(['clusters.0.context: context applies to a kubeconfig only']);
    expect(problems({ clusters: [review('a', 'kubernetes/serviceaccount')] })[0]).toMatch(/^clusters\.0\.issuer: kubernetes\/serviceaccount is the legacy token issuer/);
    expect(problems({ clusters: [offline('Prod_Cluster', 'https://a')] })[0]).toMatch(/^clusters\.0\.name: must be a DNS label/);
  });

  it('refuses two clusters that could not be told apart', () => {
    expect(problems({ clusters: [offline('a', 'https://a'), review('a', 'https://b')] })).toEqual(['clusters.1.name: name already used by clusters[0]']);
    expect(problems({ clusters: [offline('a', 'https://a'), review('b', 'https://a')] })).toEqual(['clusters.1.issuer: issuer already used by clusters[0]']);
    expect(problems({ clusters: [review('a', 'https://a', { allowLegacyTokens: true }), review('b', 'https://b', { allowLegacyTokens: true })] })).toEqual([
      'clusters.1.allowLegacyTokens: only one cluster may accept legacy tokens (already clusters[0])',
    ]);
  });
});

describe('startup checks', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tessera-k8s-config-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const refusesToStart = async (cluster: Record<string, unknown>, message: RegExp) => {
    await expect(startBroker({ clusters: [cluster] })).rejects.toThrow(message);
  };

  it('refuses a missing or unusable JWKS file', async () => {
    await refusesToStart(offline('a', 'https://a.example', { jwksFile: join(dir, 'absent.json') }), /cluster a: jwksFile .*absent\.json: ENOENT/);
    await writeFile(join(dir, 'private.json'), JSON.stringify({ keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y', d: 'd' }] }));
    await refusesToStart(offline('a', 'https://a.example', { jwksFile: join(dir, 'private.json') }), /private key material/);
    await writeFile(join(dir, 'empty.json'), JSON.stringify({ keys: [{ kty: 'oct', k: 'c2VjcmV0' }] }));
    await refusesToStart(offline('a', 'https://a.example', { jwksFile: join(dir, 'empty.json') }), /no public signing keys/);
  });

  it('refuses a kubeconfig that would send tokens unprotected', async () => {
    const skip = await writeKubeconfig({ server: 'https://k8s.example.test:6443', token: 't', skipTlsVerify: true });
    const plain = await writeKubeconfig({ server: 'http://k8s.example.test:8080', token: 't' });
    try {
      await refusesToStart(review('a', 'https://a.example', { kubeconfig: skip.path }), /cluster a: insecure-skip-tls-verify/);
      await refusesToStart(review('a', 'https://a.example', { kubeconfig: plain.path }), /cluster a: cluster server must be https/);
    } finally {
      await skip.remove();
      await plain.remove();
    }
  });

  it('names what is wrong with the kubeconfig or the in-cluster setup', async () => {
    const good = await writeKubeconfig({ server: 'https://k8s.example.test:6443', token: 't' });
    try {
      await refusesToStart(review('a', 'https://a.example', { kubeconfig: join(dir, 'nope') }), /cluster a: kubeconfig .*nope: ENOENT/);
      await refusesToStart(review('a', 'https://a.example', { kubeconfig: good.path, context: 'staging' }), /cluster a: kubeconfig has no context staging/);
      const inPod = Boolean(process.env.KUBERNETES_SERVICE_HOST);
      if (!inPod) await refusesToStart(review('a', 'https://a.example', { kubeconfig: undefined, inCluster: true }), /cluster a: inCluster: KUBERNETES_SERVICE_HOST/);
    } finally {
      await good.remove();
    }
  });
});
