import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TemporarilyUnavailable } from '@tessera/plugin-sdk';
import { LoopbackIssuer } from '@tessera/plugin-testkit';
import type { ContractBroker } from '@tessera/plugin-testkit/contract';
import { rejection, startBroker, validate } from './broker.js';
import { FakeKubeApiServer } from './fake-kube-apiserver.js';
import { mintProjected, writeKubeconfig } from './fixtures.js';

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** A self-signed serving certificate for 127.0.0.1, as a kind or kubeadm cluster CA would issue one. */
function servingCertificate(dir: string, name: string): { key: string; cert: string } {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=kube-apiserver', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], {
    stdio: 'ignore',
  });
  return { key, cert };
}

// The API server over HTTPS, trusted through certificate-authority-data: the path every real cluster takes.
// Skipped only where the openssl binary (which makes the test CA) is missing; CI's Debian image has it.
describe.skipIf(!hasOpenssl())('tokenReview over TLS', () => {
  let dir: string;
  let cluster: LoopbackIssuer;
  let api: FakeKubeApiServer;
  let trusted: ContractBroker;
  let mistrusted: ContractBroker;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tessera-k8s-tls-'));
    const serving = servingCertificate(dir, 'apiserver');
    const other = servingCertificate(dir, 'other-ca');
    const reviewerToken = randomUUID();
    cluster = await LoopbackIssuer.start({ path: '/tls', alg: 'RS256' });
    api = await FakeKubeApiServer.start({
      issuer: cluster.issuer,
      keys: () => [cluster.key.publicJwk],
      reviewerToken,
      tls: { key: await readFile(serving.key, 'utf8'), cert: await readFile(serving.cert, 'utf8') },
    });
    const right = await writeKubeconfig({ server: api.url, token: reviewerToken, caPem: await readFile(serving.cert, 'utf8') });
    const wrong = await writeKubeconfig({ server: api.url, token: reviewerToken, caPem: await readFile(other.cert, 'utf8') });
    trusted = await startBroker({ clusters: [{ name: 'tls', mode: 'tokenReview', issuer: cluster.issuer, kubeconfig: right.path }] });
    mistrusted = await startBroker({ clusters: [{ name: 'tls', mode: 'tokenReview', issuer: cluster.issuer, kubeconfig: wrong.path }] });
  });
  afterAll(async () => {
    await trusted?.close();
    await mistrusted?.close();
    await api?.close();
    await cluster?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('reviews over a verified TLS connection', async () => {
    const identity = await validate(trusted, await mintProjected(cluster, trusted.issuer));
    expect(identity.issuer).toBe('k8s:tls');
  });

  it('sends nothing to a server whose certificate the kubeconfig CA did not sign', async () => {
    const before = api.reviews.length;
    expect(await rejection(validate(mistrusted, await mintProjected(cluster, mistrusted.issuer)))).toBeInstanceOf(TemporarilyUnavailable);
    expect(api.reviews.length).toBe(before);
  });
});
