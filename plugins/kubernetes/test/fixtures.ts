import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, type JWTPayload } from 'jose';
import type { LoopbackIssuer, TestKey } from '@tessera/plugin-testkit';

/** A workload as Kubernetes describes it in a projected token: pod, node and service account, with uids. */
export interface Workload {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly serviceAccountUid: string;
  readonly pod?: { readonly name: string; readonly uid: string };
  readonly node?: { readonly name: string; readonly uid: string };
}

export function workload(overrides: Partial<Workload> = {}): Workload {
  return {
    namespace: 'payments',
    serviceAccount: 'api',
    serviceAccountUid: randomUUID(),
    pod: { name: `api-7d4b9c6f5-${randomUUID().slice(0, 5)}`, uid: randomUUID() },
    node: { name: 'worker-1', uid: randomUUID() },
    ...overrides,
  };
}

/** Claims of a projected service-account token (`serviceAccountToken { audience }` volume), as kubelet requests them. */
export function projectedClaims(audience: string | readonly string[], who: Workload = workload()): JWTPayload {
  const now = Math.floor(Date.now() / 1000);
  return {
    aud: [audience].flat(),
    nbf: now,
    sub: `system:serviceaccount:${who.namespace}:${who.serviceAccount}`,
    'kubernetes.io': {
      namespace: who.namespace,
      ...(who.node ? { node: { ...who.node } } : {}),
      ...(who.pod ? { pod: { ...who.pod } } : {}),
      serviceaccount: { name: who.serviceAccount, uid: who.serviceAccountUid },
    },
  };
}

export function mintProjected(
  cluster: LoopbackIssuer,
  audience: string | readonly string[],
  who: Workload = workload(),
  options: { expiresIn?: number; extra?: JWTPayload; key?: TestKey } = {},
): Promise<string> {
  return cluster.mint({ ...projectedClaims(audience, who), ...options.extra }, { expiresIn: options.expiresIn ?? 3_600, ...(options.key ? { key: options.key } : {}) });
}

/** A legacy secret-based token: flat claims, no exp, no aud, no iat, the shared `kubernetes/serviceaccount` issuer. */
export function mintLegacy(key: TestKey, who: Workload = workload()): Promise<string> {
  return new SignJWT({
    iss: 'kubernetes/serviceaccount',
    'kubernetes.io/serviceaccount/namespace': who.namespace,
    'kubernetes.io/serviceaccount/secret.name': `${who.serviceAccount}-token-x7k2p`,
    'kubernetes.io/serviceaccount/service-account.name': who.serviceAccount,
    'kubernetes.io/serviceaccount/service-account.uid': who.serviceAccountUid,
    sub: `system:serviceaccount:${who.namespace}:${who.serviceAccount}`,
  })
    .setProtectedHeader({ alg: key.alg, kid: key.kid })
    .sign(key.privateKey);
}

export interface KubeconfigOptions {
  readonly server: string;
  /** The broker's own bearer token for the cluster API. */
  readonly token: string;
  /** PEM of the CA that signed the API server certificate. */
  readonly caPem?: string;
  readonly skipTlsVerify?: boolean;
  readonly name?: string;
}

/** Writes a kubeconfig the way `kubectl config` would, in a fresh temp dir; returns its path and a cleanup. */
export async function writeKubeconfig(options: KubeconfigOptions): Promise<{ path: string; dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-k8s-'));
  const name = options.name ?? 'kind-test';
  const cluster = [
    `    server: ${options.server}`,
    ...(options.caPem ? [`    certificate-authority-data: ${Buffer.from(options.caPem).toString('base64')}`] : []),
    ...(options.skipTlsVerify ? ['    insecure-skip-tls-verify: true'] : []),
  ];
  const text = [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- cluster:',
    ...cluster,
    `  name: ${name}`,
    'contexts:',
    '- context:',
    `    cluster: ${name}`,
    '    user: tessera-reviewer',
    `  name: ${name}`,
    `current-context: ${name}`,
    'preferences: {}',
    'users:',
    '- name: tessera-reviewer',
    '  user:',
    `    token: ${options.token}`,
    '',
  ].join('\n');
  const path = join(dir, 'kubeconfig');
  await writeFile(path, text, { mode: 0o600 });
  return { path, dir, remove: () => rm(dir, { recursive: true, force: true }) };
}
