import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, symlink, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { loadConfigFile, type BrokerConfig } from '@tessera/core';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { RedisServer, redisSkipReason } from '../src/redis-server.js';
import { CLI, freePort, Serve, until } from '../e2e/serve.js';
import { shellBlocks as allShellBlocks, type ShellBlock } from '../src/doc-shell-blocks.js';

// The chart in deploy/helm/tessera, rendered by a real helm (built by scripts/install-helm.sh) and
// checked three ways: every object decodes strictly into the Kubernetes API types (k8s-validate), the
// rendered broker config is one the broker accepts (`tessera config validate` and loadConfigFile), and,
// for the defaults, the fleet and a door switched off, the rendered container runs and answers its
// rendered probes.

const REPO = resolve(import.meta.dirname, '../..');
const CHART = join(REPO, 'deploy/helm/tessera');
const HELM = join(REPO, '.tools/helm/bin/helm');
const VALIDATE = join(REPO, '.tools/helm/bin/k8s-validate');
const DOC = 'docs/deploy.md';
const doc = await readFile(join(REPO, DOC), 'utf8');

/** Why these tests cannot run here, or undefined. CI sets TESSERA_REQUIRE_HELM=1: then a missing helm fails the file. */
function helmSkipReason(): string | undefined {
  const missing = [HELM, VALIDATE].filter((path) => !existsSync(path)).map((path) => path.slice(REPO.length + 1));
  if (missing.length === 0) return undefined;
  const reason = `${missing.join(' and ')} not built (bash scripts/install-helm.sh; .ci/run runs it)`;
  if (process.env.TESSERA_REQUIRE_HELM === '1') throw new Error(`TESSERA_REQUIRE_HELM=1 but ${reason}`);
  return reason;
}
const skip = helmSkipReason();

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function run(command: string, args: readonly string[], options: { input?: string; cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(command, args, { cwd: options.cwd ?? REPO, env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', fail);
    child.once('close', (code) => done({ code, stdout, stderr }));
    child.stdin.end(options.input ?? '');
  });
}

// Just what the assertions read of the typed objects k8s-validate prints.
interface EnvVar { readonly name: string; readonly value?: string }
interface Probe { readonly httpGet: { readonly path: string; readonly port: string; readonly scheme: string } }
interface Mount { readonly name: string; readonly mountPath: string; readonly readOnly?: boolean }
interface Container {
  readonly args?: readonly string[];
  readonly env?: readonly EnvVar[];
  readonly ports: readonly { readonly name: string; readonly containerPort: number }[];
  readonly startupProbe: Probe;
  readonly livenessProbe: Probe;
  readonly readinessProbe: Probe;
  readonly lifecycle?: { readonly preStop?: { readonly sleep?: { readonly seconds: number } } };
  readonly securityContext: Record<string, unknown>;
  readonly resources: { readonly requests?: Record<string, string>; readonly limits?: Record<string, string> };
  readonly volumeMounts: readonly Mount[];
}
interface Volume {
  readonly name: string;
  readonly csi?: { readonly driver: string; readonly readOnly?: boolean };
  readonly hostPath?: { readonly path: string; readonly type?: string };
  readonly secret?: { readonly secretName: string };
  readonly emptyDir?: object;
}
interface K8sObject {
  readonly kind: string;
  readonly apiVersion: string;
  readonly metadata: { readonly name: string; readonly annotations?: Record<string, string>; readonly labels?: Record<string, string> };
  readonly data?: Record<string, string>;
  readonly spec?: {
    readonly replicas?: number;
    readonly maxUnavailable?: number;
    readonly selector?: { readonly matchLabels: Record<string, string> };
    readonly template?: {
      readonly metadata: { readonly labels: Record<string, string>; readonly annotations?: Record<string, string> };
      readonly spec: {
        readonly securityContext: Record<string, unknown>;
        readonly terminationGracePeriodSeconds: number;
        readonly automountServiceAccountToken: boolean;
        readonly containers: readonly Container[];
        readonly volumes: readonly Volume[];
      };
    };
  };
}

interface Rendered {
  readonly objects: readonly K8sObject[];
  readonly kinds: readonly string[];
  readonly deployment: K8sObject;
  readonly container: Container;
  readonly volumes: readonly Volume[];
  readonly configMap: K8sObject;
  object(kind: string): K8sObject | undefined;
}

/** Renders the chart and decodes the output with k8s-validate; a render or a decode that fails fails the test. */
async function render(args: readonly string[]): Promise<Rendered> {
  const template = await run(HELM, ['template', 'tessera', CHART, ...args]);
  expect(template.stderr, 'helm template').toBe('');
  expect(template.code).toBe(0);
  const validated = await run(VALIDATE, ['-json'], { input: template.stdout });
  expect(validated.stderr).toMatch(/^k8s-validate: \d+ objects valid: /);
  expect(validated.code, validated.stderr).toBe(0);
  const objects = JSON.parse(validated.stdout) as K8sObject[];
  const object = (kind: string) => objects.find((candidate) => candidate.kind === kind);
  const deployment = object('Deployment')!;
  return {
    objects,
    kinds: objects.map((candidate) => candidate.kind).sort(),
    deployment,
    container: deployment.spec!.template!.spec.containers[0]!,
    volumes: deployment.spec!.template!.spec.volumes,
    configMap: object('ConfigMap')!,
    object,
  };
}

/** A render that must fail: the exit status, and the message on standard error. */
async function renderFails(args: readonly string[]): Promise<string> {
  const template = await run(HELM, ['template', 'tessera', CHART, ...args]);
  expect(template.code).not.toBe(0);
  expect(template.stdout).toBe('');
  return template.stderr;
}

/**
 * A pod's file system in a temp dir: the chart is rendered with its mount paths pointed there, the
 * ConfigMap and the chart's Secret are written out as the kubelet would, and the test adds what an
 * existing Secret would hold.
 */
class PodFiles {
  private constructor(readonly root: string) {}

  static async create(): Promise<PodFiles> {
    const files = new PodFiles(await mkdtemp(join(tmpdir(), 'tessera-helm-')));
    for (const dir of [files.config, files.secrets, files.tls, files.data]) await mkdir(dir, { recursive: true });
    return files;
  }

  get config(): string { return join(this.root, 'conf.d'); }
  get secrets(): string { return join(this.root, 'secrets'); }
  get tls(): string { return join(this.root, 'tls'); }
  get data(): string { return join(this.root, 'data'); }

  /** The --set flags that mount everything here. */
  get paths(): string[] {
    return ['--set', `paths.config=${this.config}`, '--set', `paths.secrets=${this.secrets}`, '--set', `paths.tls=${this.tls}`, '--set', `paths.data=${this.data}`];
  }

  async mount(rendered: Rendered): Promise<void> {
    for (const [name, content] of Object.entries(rendered.configMap.data ?? {})) await writeFile(join(this.config, name), content);
    const secret = rendered.object('Secret');
    for (const [name, content] of Object.entries((secret as { data?: Record<string, string> } | undefined)?.data ?? {})) {
      await writeFile(join(this.secrets, name), Buffer.from(content, 'base64'), { mode: 0o440 });
    }
  }

  /** A signing key as `tessera keys generate` writes it. */
  async signingKey(name: string): Promise<void> {
    const generated = await run(process.execPath, [CLI, 'keys', 'generate', '--out', join(this.secrets, name)]);
    expect(generated.code, generated.stderr).toBe(0);
  }

  /** tls.crt and tls.key as a kubernetes.io/tls Secret holds them: a self-signed P-256 pair for 127.0.0.1. */
  async tlsPair(): Promise<void> {
    const made = await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(this.tls, 'tls.key'), '-out', join(this.tls, 'tls.crt')]);
    expect(made.code, made.stderr).toBe(0);
  }
}

/** The container's environment, as the kubelet would set it, on top of this process's. */
function containerEnv(container: Container, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  for (const variable of container.env ?? []) env[variable.name] = variable.value ?? '';
  return env;
}

async function brokerAccepts(files: PodFiles, container: Container): Promise<BrokerConfig> {
  const validated = await run(process.execPath, [CLI, 'config', 'validate', files.config], { env: containerEnv(container) });
  expect(validated.stderr, 'tessera config validate').toBe('');
  expect(validated.code).toBe(0);
  expect(validated.stdout).toContain(': valid');
  return (await loadConfigFile(files.config, containerEnv(container))).config;
}

const serves: Serve[] = [];

/** Runs the rendered container's command line (the image's entrypoint is `tessera`) on a free port. */
async function serveContainer(container: Container): Promise<Serve> {
  const port = await freePort();
  const child = spawn(process.execPath, [CLI, ...container.args!], { env: containerEnv(container, { PORT: String(port) }), stdio: ['ignore', 'pipe', 'pipe'] });
  const serve = new Serve(child, port);
  serves.push(serve);
  await until('the listening line', () => serve.stderr.includes('tessera listening on') || serve.exit !== undefined, 30_000);
  if (serve.exit) throw new Error(`tessera serve exited ${serve.exit.code}: ${serve.stderr}`);
  return serve;
}

/** One request the way the kubelet probes: the rendered scheme and path, the certificate not verified. */
function probe(serve: Serve, scheme: string, path: string, method = 'GET'): Promise<number> {
  return new Promise((done, fail) => {
    const options = { host: '127.0.0.1', port: serve.port, path, method, rejectUnauthorized: false };
    const request = scheme === 'HTTPS' ? httpsRequest(options) : httpRequest(options);
    request.once('response', (response) => {
      response.resume();
      done(response.statusCode!);
    });
    request.once('error', fail);
    request.end();
  });
}

/** Readiness may take a moment (Redis connects, the audit sink opens): poll as the kubelet does. */
async function eventually(serve: Serve, scheme: string, path: string): Promise<number> {
  let status = 0;
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    status = await probe(serve, scheme, path);
    if (status === 200) break;
    await new Promise((done) => setTimeout(done, 100));
  }
  return status;
}

/** The ```yaml block whose first line is `# NAME`, as the guide shows it. */
function valuesBlock(name: string): string {
  const start = doc.indexOf(`\`\`\`yaml\n# ${name}\n`);
  expect(start, `${DOC}: a yaml block starting with # ${name}`).toBeGreaterThan(0);
  const body = doc.slice(start + '```yaml\n'.length);
  return body.slice(0, body.indexOf('```\n'));
}

let valueFiles: string;

beforeAll(async () => {
  valueFiles = await mkdtemp(join(tmpdir(), 'tessera-values-'));
  for (const name of ['fleet-values.yaml', 'spiffe-door-values.yaml']) await writeFile(join(valueFiles, name), valuesBlock(name));
});

beforeEach((ctx) => {
  if (skip) ctx.skip(skip);
});

afterEach(async () => {
  for (const serve of serves.splice(0)) {
    if (serve.exit === undefined) {
      serve.child.kill('SIGKILL');
      await serve.exited;
    }
  }
});

describe('the Helm chart', () => {
  it('passes helm lint --strict with the defaults and with each documented value file', async () => {
    for (const args of [[], ['-f', join(valueFiles, 'fleet-values.yaml')], ['-f', join(valueFiles, 'spiffe-door-values.yaml')]]) {
      const lint = await run(HELM, ['lint', '--strict', CHART, ...args]);
      expect(lint.stdout + lint.stderr, `helm lint ${args.join(' ')}`).toContain('1 chart(s) linted, 0 chart(s) failed');
      expect(lint.code).toBe(0);
    }
  });

  it('defaults: one locked-down pod whose config the broker accepts and serves on the rendered probes', async () => {
    const plain = await render([]);
    expect(plain.kinds).toEqual(['ConfigMap', 'Deployment', 'Service', 'ServiceAccount']);
    const files = await PodFiles.create();
    const rendered = await render(files.paths);
    const { deployment, container } = rendered;
    const pod = deployment.spec!.template!.spec;

    expect(deployment.spec!.replicas).toBe(1);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 10001, seccompProfile: { type: 'RuntimeDefault' } });
    expect(container.securityContext).toMatchObject({
      runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(container.resources.requests).toEqual({ cpu: '100m', memory: '128Mi' });
    expect(container.resources.limits).toEqual({ cpu: '1', memory: '512Mi' });
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(container.ports).toEqual([{ name: 'http', containerPort: 8080, protocol: 'TCP' }]);
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'http', scheme: 'HTTP' });
    expect(container.startupProbe.httpGet).toEqual({ path: '/healthz', port: 'http', scheme: 'HTTP' });
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'http', scheme: 'HTTP' });
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(container.lifecycle!.preStop!.sleep!.seconds + 10);
    expect(deployment.spec!.template!.metadata.annotations).toMatchObject({
      'prometheus.io/scrape': 'true', 'prometheus.io/port': '8080', 'prometheus.io/path': '/metrics', 'prometheus.io/scheme': 'http',
    });
    // The only writable places: /tmp and the development key's dataDir.
    expect(pod.volumes.filter((volume) => volume.emptyDir).map((volume) => volume.name).sort()).toEqual(['data', 'tmp']);
    const service = rendered.object('Service') as K8sObject & { spec: { selector: Record<string, string>; ports: { targetPort: string }[] } };
    expect(service.spec.ports[0]!.targetPort).toBe('http');
    expect(deployment.spec!.template!.metadata.labels).toMatchObject(service.spec.selector);

    await files.mount(rendered);
    const config = await brokerAccepts(files, container);
    expect(config.keys.generate).toBe(true);
    expect(config.store).toMatchObject({ kind: 'memory', replicas: 1 });
    expect(config.endpoints.token.enabled).toBe(true);
    expect(config.endpoints.spiffeExchange.enabled).toBe(false);
    expect(config.lifecycle.drainTimeoutMs).toBe(10_000);

    const serve = await serveContainer(container);
    expect(await probe(serve, 'HTTP', container.livenessProbe.httpGet.path)).toBe(200);
    expect(await eventually(serve, 'HTTP', container.readinessProbe.httpGet.path)).toBe(200);
    expect(await probe(serve, 'HTTP', deployment.spec!.template!.metadata.annotations!['prometheus.io/path']!)).toBe(200);
  });

  it('fleet: TLS, Redis and three replicas render a PodDisruptionBudget, HTTPS probes and a config the broker accepts', async () => {
    const values = join(valueFiles, 'fleet-values.yaml');
    expect((await render(['-f', values])).kinds).toEqual(['ConfigMap', 'Deployment', 'PodDisruptionBudget', 'Service', 'ServiceAccount']);
    const files = await PodFiles.create();
    const rendered = await render(['-f', values, ...files.paths]);
    const { deployment, container, volumes } = rendered;

    expect(deployment.spec!.replicas).toBe(3);
    const pdb = rendered.object('PodDisruptionBudget')!;
    expect(pdb.apiVersion).toBe('policy/v1');
    expect(pdb.spec!.maxUnavailable).toBe(1);
    expect(deployment.spec!.template!.metadata.labels).toMatchObject(pdb.spec!.selector!.matchLabels);
    for (const probed of [container.startupProbe, container.livenessProbe, container.readinessProbe]) {
      expect(probed.httpGet).toMatchObject({ port: 'https', scheme: 'HTTPS' });
    }
    expect(container.ports).toEqual([{ name: 'https', containerPort: 8443, protocol: 'TCP' }]);
    expect(volumes.find((volume) => volume.name === 'tls')!.secret!.secretName).toBe('tessera-tls');
    expect(volumes.find((volume) => volume.name === 'secrets')!.secret!.secretName).toBe('tessera-secrets');
    expect(rendered.object('Secret')).toBeUndefined();
    expect(volumes.some((volume) => volume.name === 'data')).toBe(false);

    // What `kubectl create secret` and cert-manager would have put there.
    await files.mount(rendered);
    await files.signingKey('signing-2026-12.pem');
    await writeFile(join(files.secrets, 'redis-password'), 'fleet-redis-password-0123\n');
    await files.tlsPair();
    const config = await brokerAccepts(files, container);
    expect(config.store).toMatchObject({ kind: 'redis', url: 'redis://redis.tessera.svc:6379/0', replicas: 3, keyPrefix: 'tessera:prod:', password: 'fleet-redis-password-0123' });
    expect(config.listen).toMatchObject({ host: '0.0.0.0', port: 8443, tls: { certFile: join(files.tls, 'tls.crt'), keyFile: join(files.tls, 'tls.key') } });
    expect(config.keys.files).toMatchObject([{ path: join(files.secrets, 'signing-2026-12.pem'), kid: 'signing-2026-12' }]);
    expect(config.keys.generate).toBe(false);
  });

  it('fleet: the rendered pod serves HTTPS and turns ready against a real Redis that wants the mounted password', async (ctx) => {
    const unavailable = redisSkipReason();
    if (unavailable) ctx.skip(unavailable);
    const redis = await RedisServer.start({ password: 'fleet-redis-password-0123' });
    try {
      const files = await PodFiles.create();
      // The documented config trusts login.example.com, whose keys a plugin would fetch at startup:
      // serve the same chart wiring with no plugins, against this Redis.
      const rendered = await render(['-f', join(valueFiles, 'fleet-values.yaml'), ...files.paths,
        '--set', `redis.url=redis://127.0.0.1:${redis.port}/0`, '--set-json', 'config={"audit":{"destination":"stdout"}}']);
      await files.mount(rendered);
      await files.signingKey('signing-2026-12.pem');
      await writeFile(join(files.secrets, 'redis-password'), 'fleet-redis-password-0123\n');
      await files.tlsPair();
      const { container } = rendered;
      const serve = await serveContainer(container);
      expect(await probe(serve, 'HTTPS', container.livenessProbe.httpGet.path)).toBe(200);
      expect(await eventually(serve, 'HTTPS', container.readinessProbe.httpGet.path)).toBe(200);
      // A wrong password in the secret keeps a pod out of the Service: not ready, yet alive.
      await writeFile(join(files.secrets, 'redis-password'), 'not-the-password-0123\n');
      const second = await serveContainer(container);
      expect(await probe(second, 'HTTPS', container.livenessProbe.httpGet.path)).toBe(200);
      expect(await probe(second, 'HTTPS', container.readinessProbe.httpGet.path)).toBe(503);
    } finally {
      await redis.stop();
    }
  });

  it('SPIFFE door only: the CSI Workload API volume, the admin socket hostPath, and a config that resolves both sockets', async () => {
    const files = await PodFiles.create();
    const rendered = await render(['-f', join(valueFiles, 'spiffe-door-values.yaml'), ...files.paths]);
    const { container, volumes } = rendered;

    expect(volumes.find((volume) => volume.name === 'spiffe-workload-api')!.csi).toEqual({ driver: 'csi.spiffe.io', readOnly: true });
    expect(volumes.find((volume) => volume.name === 'spire-agent-admin')!.hostPath).toEqual({ path: '/run/spire/agent/private', type: 'Directory' });
    expect(container.volumeMounts).toEqual(expect.arrayContaining([
      { name: 'spiffe-workload-api', mountPath: '/spiffe-workload-api', readOnly: true },
      { name: 'spire-agent-admin', mountPath: '/run/spire/agent/private', readOnly: true },
    ]));
    expect(container.env).toEqual([
      { name: 'SPIFFE_ENDPOINT_SOCKET', value: 'unix:///spiffe-workload-api/spire-agent.sock' },
      { name: 'SPIRE_ADMIN_SOCKET', value: 'unix:///run/spire/agent/private/admin.sock' },
    ]);
    // The string form is kept as written, comments included.
    expect(rendered.configMap.data!['10-config.yaml']).toContain('# Pods present their projected service-account token');

    await files.mount(rendered);
    await files.signingKey('signing-2026-12.pem');
    const config = await brokerAccepts(files, container);
    expect(config.endpoints.token.enabled).toBe(false);
    expect(config.endpoints.spiffeExchange).toMatchObject({ enabled: true, publicClient: 'cluster-workloads' });
    const spire = config.plugins.find((plugin) => plugin.use === '@tessera/plugin-spire-jwt-svid')!;
    expect(spire.config).toMatchObject({ adminSocket: 'unix:///run/spire/agent/private/admin.sock' });

    // Without the container's environment the same files are refused: the socket comes from the chart.
    const bare = await run(process.execPath, [CLI, 'config', 'validate', files.config], { env: { ...process.env, SPIRE_ADMIN_SOCKET: '' } });
    expect(bare.code).toBe(1);
    expect(bare.stderr).toContain('SPIRE_ADMIN_SOCKET');
  });

  it('switches the two doors independently, and a broker with the OAuth door off answers no /token', async () => {
    for (const [oauth, spiffe] of [[true, false], [false, true], [true, true], [false, false]] as const) {
      const files = await PodFiles.create();
      const rendered = await render([...files.paths, '--set', `oauth.enabled=${oauth}`, '--set', `spiffeExchange.enabled=${spiffe}`]);
      await files.mount(rendered);
      const config = (await loadConfigFile(files.config)).config;
      expect({ oauth: config.endpoints.token.enabled, spiffe: config.endpoints.spiffeExchange.enabled }).toEqual({ oauth, spiffe });
    }

    const files = await PodFiles.create();
    const rendered = await render([...files.paths, '--set', 'oauth.enabled=false']);
    await files.mount(rendered);
    await brokerAccepts(files, rendered.container);
    const serve = await serveContainer(rendered.container);
    expect(await eventually(serve, 'HTTP', rendered.container.readinessProbe.httpGet.path)).toBe(200);
    expect(await probe(serve, 'HTTP', '/token', 'POST')).toBe(404);
    expect(await probe(serve, 'HTTP', '/.well-known/oauth-authorization-server')).toBe(404);
    expect(await probe(serve, 'HTTP', '/keys')).toBe(200);
  });

  it('a Secret made by the chart from secrets.files reaches the broker as the files keys.files names', async () => {
    const files = await PodFiles.create();
    const key = join(files.root, 'signing.pem');
    expect((await run(process.execPath, [CLI, 'keys', 'generate', '--out', key])).code).toBe(0);
    const rendered = await render([...files.paths, '--set-file', `secrets.files.signing\\.pem=${key}`, '--set', 'signingKeys[0].file=signing.pem', '--set', 'signingKeys[0].kid=k1']);
    const secret = rendered.object('Secret')!;
    expect(Object.keys(secret.data!)).toEqual(['signing.pem']);
    expect(rendered.deployment.spec!.template!.metadata.annotations).toHaveProperty('checksum/secrets');
    await files.mount(rendered);
    const config = await brokerAccepts(files, rendered.container);
    expect(config.keys).toMatchObject({ generate: false, files: [{ path: join(files.secrets, 'signing.pem'), kid: 'k1' }] });
    const serve = await serveContainer(rendered.container);
    expect(await eventually(serve, 'HTTP', '/readyz')).toBe(200);
  });

  it('NOTES.txt warns about a development key and the placeholder issuer, and only then', async () => {
    const notes = async (args: string[]) => {
      const installed = await run(HELM, ['install', 'tessera', CHART, '--dry-run=client', ...args]);
      expect(installed.code, installed.stderr).toBe(0);
      return installed.stdout.slice(installed.stdout.indexOf('NOTES:'));
    };
    const defaults = await notes([]);
    expect(defaults).toContain('WARNING: no signingKeys are set');
    expect(defaults).toContain("WARNING: issuer is still the chart's placeholder");
    expect(defaults).toContain('curl -fsS http://127.0.0.1:8080/readyz');
    const fleet = await notes(['-f', join(valueFiles, 'fleet-values.yaml')]);
    expect(fleet).not.toContain('WARNING');
    expect(fleet).toContain('Store:  redis (redis://redis.tessera.svc:6379/0)');
    expect(fleet).toContain('curl -fsS -k https://127.0.0.1:8443/readyz');
  });

  it('the issuer path prefixes the probes and the metrics path', async () => {
    const rendered = await render(['--set', 'issuer=https://sts.example.com/broker/']);
    expect(rendered.container.readinessProbe.httpGet.path).toBe('/broker/readyz');
    expect(rendered.container.livenessProbe.httpGet.path).toBe('/broker/healthz');
    expect(rendered.deployment.spec!.template!.metadata.annotations!['prometheus.io/path']).toBe('/broker/metrics');
  });

  it('refuses to render what the broker would refuse or cannot run, and says which value to change', async () => {
    const fleetWithoutRedis = await renderFails(['--set', 'replicaCount=3']);
    expect(fleetWithoutRedis).toContain('replicaCount 3 needs redis.url: the broker refuses a fleet on a memory store');
    expect(doc).toContain('replicaCount 3 needs redis.url: the\n  broker refuses a fleet on a memory store');

    expect(await renderFails(['--set', 'replicaCount=2', '--set', 'redis.url=redis://redis:6379'])).toContain('replicaCount 2 needs signingKeys');
    expect(await renderFails(['--set', 'terminationGracePeriodSeconds=12'])).toContain('terminationGracePeriodSeconds 12 must exceed preStopSleepSeconds + drainTimeoutSeconds (15)');
    expect(await renderFails(['--set-json', 'config={"store":{"url":"redis://x:6379"}}'])).toContain('config.store.url is rendered by the chart from redis.* and replicaCount');
    expect(await renderFails(['--set-json', 'config={"endpoints":{"token":{"enabled":false}}}'])).toContain('config.endpoints.token.enabled is rendered by the chart: set oauth.enabled instead');
    expect(await renderFails(['--set', 'config=listen: [unclosed'])).toContain('config: not YAML');
    expect(await renderFails(['--set', 'tls.enabled=true'])).toContain('tls.enabled with tls.source secret needs tls.secretName');
    expect(await renderFails(['--set', 'signingKeys[0].file=a.pem', '--set', 'secrets.files.b\\.pem=x'])).toContain('signingKeys[0].file: "a.pem" is not a key of secrets.files');
    // values.schema.json: unknown keys and wrong types, before any template runs.
    expect(await renderFails(['--set', 'replicas=3'])).toContain("additional properties 'replicas' not allowed");
    expect(await renderFails(['--set', 'issuer=http://sts.example.com'])).toContain('/issuer');
    expect(await renderFails(['--set', 'spiffe.csi.mountPath=relative'])).toContain('/spiffe/csi/mountPath');
  });
});

describe('k8s-validate', () => {
  it('fails an unknown field, a wrong type and an unknown kind, naming the object', async () => {
    const template = await run(HELM, ['template', 'tessera', CHART]);
    const manifests = template.stdout;
    const cases: [string, string, RegExp][] = [
      ['an unknown field', manifests.replace('imagePullPolicy: IfNotPresent', 'imagePullPolicy: IfNotPresent\n          imagePulPolicy: Always'),
        /Deployment\/tessera \(tessera\/templates\/deployment.yaml\): strict decoding error: unknown field "spec.template.spec.containers\[0\].imagePulPolicy"/],
      ['a wrong type', manifests.replace('spec:\n  replicas: 1\n', 'spec:\n  replicas: "1"\n'), /Deployment\/tessera .*cannot unmarshal string .* of type int32/],
      ['an unknown kind', `${manifests}---\napiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: tessera\n`, /ServiceMonitor\/tessera .*unknown kind ServiceMonitor/],
      ['a selector that misses its pods', manifests.replace(/(matchLabels:\n\s+app.kubernetes.io\/name: )tessera/, '$1other'), /Deployment\/tessera .*`selector` does not match template `labels`/],
      ['a bad name', manifests.replace('name: tessera\n', 'name: Tessera_\n'), /a lowercase RFC 1123/],
    ];
    for (const [what, input, message] of cases) {
      expect(input, what).not.toBe(manifests);
      const validated = await run(VALIDATE, [], { input });
      expect(validated.code, what).toBe(1);
      expect(validated.stderr, what).toMatch(message);
    }
    expect((await run(VALIDATE, [], { input: manifests })).code).toBe(0);
  });
});

/** The chart's and the unit's sections of the guide; the image's section has tests of its own. */
const shellBlocks = (): ShellBlock[] => allShellBlocks(doc).filter((block) => ['Helm chart', 'systemd'].includes(block.section));

describe(`${DOC}: shell blocks`, () => {
  it('marks each block as tested by a file that exists, or untested with the reason', () => {
    const blocks = shellBlocks();
    expect(blocks.map((block) => block.section)).toEqual(['Helm chart', 'Helm chart', 'Helm chart', 'systemd', 'systemd']);
    for (const block of blocks) {
      const tested = /^<!-- tested: (\S+) -->$/.exec(block.marker);
      if (tested) expect(existsSync(join(REPO, tested[1]!)), `${DOC}:${block.line}: ${tested[1]}`).toBe(true);
      else expect(block.marker, `${DOC}:${block.line}`).toMatch(/^<!-- untested: .+ -->$/);
    }
  });

  it('runs the chart checks as written, with the value file the guide shows', async () => {
    const block = shellBlocks().find((candidate) => candidate.commands.some((command) => command.includes('k8s-validate')))!;
    expect(block.marker).toBe('<!-- tested: test/deploy/helm.test.ts -->');
    // A work dir that looks like the checkout, holding the guide's value file.
    const cwd = await mkdtemp(join(tmpdir(), 'tessera-doc-'));
    for (const entry of ['deploy', 'scripts', '.tools']) await symlink(join(REPO, entry), join(cwd, entry));
    await writeFile(join(cwd, 'fleet-values.yaml'), valuesBlock('fleet-values.yaml'));
    for (const command of block.commands) {
      const ran = await run('bash', ['-eo', 'pipefail', '-c', command], { cwd });
      expect(ran.code, `${command}\n${ran.stdout}${ran.stderr}`).toBe(0);
      if (command.includes('k8s-validate')) expect(ran.stdout).toContain('k8s-validate: 5 objects valid: PodDisruptionBudget/tessera');
    }
  }, 120_000);

  it('renders the secrets.files command as written (helm template in place of helm install)', async () => {
    const block = shellBlocks().find((candidate) => candidate.commands.some((command) => command.includes('--set-file')))!;
    const [command] = block.commands;
    const cwd = await mkdtemp(join(tmpdir(), 'tessera-doc-'));
    await symlink(join(REPO, 'deploy'), join(cwd, 'deploy'));
    expect((await run(process.execPath, [CLI, 'keys', 'generate', '--out', join(cwd, 'signing.pem')])).code).toBe(0);
    const rendered = await run('bash', ['-eo', 'pipefail', '-c', `${command!.replace(/^helm install/, `${HELM} template`)} | ${VALIDATE} -json`], { cwd });
    expect(rendered.code, rendered.stderr).toBe(0);
    const secret = (JSON.parse(rendered.stdout) as K8sObject[]).find((object) => object.kind === 'Secret')!;
    expect(Buffer.from(secret.data!['signing.pem']!, 'base64').toString()).toBe(await readFile(join(cwd, 'signing.pem'), 'utf8'));
  });
});
