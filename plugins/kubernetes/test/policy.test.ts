import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoopbackIssuer } from '@tessera/plugin-testkit';
import type { ContractBroker } from '@tessera/plugin-testkit/contract';
import { TOKEN_TYPE_KUBERNETES_SA } from '../src/index.js';
import { exchange, expectRefusedExchange, startBroker } from './broker.js';
import { mintProjected, workload } from './fixtures.js';

// The README's policy, run: attributes select the rule, and fill the SPIRE selectors of the grant.
describe('Kubernetes identities under policy', () => {
  let prod: LoopbackIssuer;
  let dev: LoopbackIssuer;
  let running: ContractBroker;

  beforeAll(async () => {
    prod = await LoopbackIssuer.start({ path: '/prod', alg: 'RS256' });
    dev = await LoopbackIssuer.start({ path: '/dev', alg: 'RS256' });
    running = await startBroker(
      {
        clusters: [
          { name: 'prod', mode: 'offline', issuer: prod.issuer },
          { name: 'dev', mode: 'offline', issuer: dev.issuer },
        ],
      },
      [
        {
          id: 'payments-pods-to-spiffe',
          match: {
            subjectTokenTypes: [TOKEN_TYPE_KUBERNETES_SA],
            attributes: { 'k8s.cluster': 'prod', 'k8s.namespace': 'payments', 'k8s.serviceAccount': ['api', 'worker'] },
          },
          grant: {
            audiences: ['spiffe://prod.example.com/**'],
            maxLifetimeSeconds: 300,
            issuerParameters: { selectors: ['k8s:ns:{attributes.k8s.namespace}', 'k8s:sa:{attributes.k8s.serviceAccount}'] },
          },
        },
        {
          id: 'pods-on-a-named-node',
          match: { attributes: { 'k8s.node': 'gpu-*' } },
          grant: { audiences: ['https://gpu-scheduler.example.test'] },
        },
      ],
    );
  });
  afterAll(async () => {
    await running?.close();
    await prod?.close();
    await dev?.close();
  });

  const post = async (cluster: LoopbackIssuer, who: ReturnType<typeof workload>, audience: string) => {
    const token = await mintProjected(cluster, running.issuer, who);
    return { token, response: await exchange(running, token, { audience }) };
  };

  it('grants a matching service account, with selectors filled from its attributes', async () => {
    const { response } = await post(prod, workload({ namespace: 'payments', serviceAccount: 'worker' }), 'spiffe://prod.example.com/db');
    expect(response.status, response.text).toBe(200);
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'allow', ruleId: 'payments-pods-to-spiffe', subject: { subject: 'system:serviceaccount:payments:worker', issuer: prod.issuer } });
  });

  it('refuses the same namespace and service account from another cluster', async () => {
    const { token, response } = await post(dev, workload({ namespace: 'payments', serviceAccount: 'api' }), 'spiffe://prod.example.com/db');
    expectRefusedExchange(response, token, 400, 'invalid_request');
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', reason: 'policy: no_rule_matched' });
  });

  it('refuses another service account of the namespace', async () => {
    const { token, response } = await post(prod, workload({ namespace: 'payments', serviceAccount: 'default' }), 'spiffe://prod.example.com/db');
    expectRefusedExchange(response, token, 400, 'invalid_request');
  });

  it('never matches an attribute the token does not carry', async () => {
    // Rules are tried in order and the first match decides: these pods are outside the payments rule.
    const onGpu = await post(prod, workload({ namespace: 'ml', node: { name: 'gpu-7', uid: 'n-7' } }), 'https://gpu-scheduler.example.test');
    expect(onGpu.response.status, onGpu.response.text).toBe(200);
    const unbound = await post(prod, workload({ namespace: 'ml', node: undefined }), 'https://gpu-scheduler.example.test');
    expectRefusedExchange(unbound.response, unbound.token, 400, 'invalid_request');
  });
});
