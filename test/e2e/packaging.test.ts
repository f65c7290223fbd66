import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, type Serve } from './serve.js';
import { copiesOf, npm, REPO, run, serveInstalled, stop, succeeded } from './installed.js';
import { ACCESS_TOKEN, allowRule, API, ID_TOKEN, LoopbackIssuer, postToken, TestClient, TOKEN_EXCHANGE } from './support.js';

/**
 * Tessera as its users get it: every workspace packed as npm would publish it, then installed with plain
 * npm into empty directories outside the repository. An operator installs the broker and two plugins and
 * serves from there; a plugin author scaffolds a plugin with the installed `tessera plugin init`, builds
 * it and passes the contract kit against the packed SDK and testkit; the operator installs that plugin
 * beside the broker and exchanges its tokens; a workload installs only the client.
 */

const PLUGIN = 'acme-token';
const PLUGIN_PACKAGE = `tessera-plugin-${PLUGIN}`;
const PLUGIN_TOKEN_TYPE = `urn:example:token-type:${PLUGIN}`;

interface PackedEntry {
  readonly name: string;
  readonly version: string;
  readonly filename: string;
  readonly files: readonly { readonly path: string }[];
}

const publishable = [
  'core',
  'libraries/sdk',
  'libraries/testkit',
  'libraries/spiffe',
  'libraries/client',
  ...(await readdir(join(REPO, 'plugins'))).sort().map((name) => `plugins/${name}`),
];

const seconds: Record<string, number> = {};
const timed = async <T extends { seconds: number }>(step: string, ran: Promise<T>): Promise<T> => {
  const result = await ran;
  seconds[step] = result.seconds;
  return result;
};

let work: string;
let tarballs: string;
let packed: Map<string, PackedEntry>;
const tarball = (name: string) => join(tarballs, packed.get(name)!.filename);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tessera-packaging-'));
  tarballs = join(work, 'tarballs');
  await mkdir(tarballs);
  // --loglevel=warn: whatever the repository's .npmrc says, a manifest npm has to correct shows up here.
  const pack = succeeded(
    'npm pack',
    await timed('pack', run('npm', ['pack', '--json', '--loglevel=warn', '--pack-destination', tarballs, ...publishable.map((dir) => `--workspace=${dir}`)], { cwd: REPO })),
  );
  expect(pack.stderr).not.toMatch(/npm warn/);
  packed = new Map((JSON.parse(pack.stdout) as PackedEntry[]).map((entry) => [entry.name, entry]));
}, 60_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
  console.info(`packaging: seconds per step ${JSON.stringify(seconds)}`);
});

describe('every package is publishable', () => {
  it.each(publishable)('%s has a complete manifest and packs only what it needs', async (dir) => {
    const manifest = JSON.parse(await readFile(join(REPO, dir, 'package.json'), 'utf8')) as Record<string, any>;
    expect(manifest.private, dir).toBeUndefined();
    expect(manifest.license).toBe('Apache-2.0');
    expect(manifest.engines).toEqual({ node: '>=22' });
    expect(manifest.type).toBe('module');
    expect(manifest.files).toContain('dist');
    for (const [name, range] of Object.entries({ ...manifest.dependencies, ...manifest.devDependencies } as Record<string, string>)) {
      if (name.startsWith('@tessera/')) expect(range, `${dir} → ${name}`).toBe('0.1.0');
    }
    // The SDK is never a dependency of a plugin or the testkit: a peer with a caret range, so the broker's copy serves.
    if (manifest.name !== '@tessera/core' && manifest.name !== '@tessera/plugin-sdk') expect(manifest.dependencies?.['@tessera/plugin-sdk'], dir).toBeUndefined();
    if (manifest.peerDependencies?.['@tessera/plugin-sdk'] !== undefined) expect(manifest.peerDependencies['@tessera/plugin-sdk'], dir).toBe('^0.1.0');
    if (dir.startsWith('plugins/')) expect(manifest.peerDependencies, dir).toMatchObject({ '@tessera/plugin-sdk': '^0.1.0' });

    const entry = packed.get(manifest.name)!;
    expect(entry, dir).toBeDefined();
    const files = entry.files.map((file) => file.path);
    expect(files).toContain('README.md');
    for (const target of Object.values(manifest.exports as Record<string, { types: string; default: string }>).flatMap((exported) => [exported.types, exported.default])) {
      expect(files, `${dir}: exports ${target}`).toContain(target.replace(/^\.\//, ''));
    }
    for (const bin of Object.values((manifest.bin ?? {}) as Record<string, string>)) expect(files, `${dir}: bin ${bin}`).toContain(bin.replace(/^\.\//, ''));
    // Only what runs (and its types, maps and README): no sources, tests or build configs.
    expect(files.filter((file) => !/^(dist\/.+\.(js|d\.ts|js\.map)|README\.md|package\.json|proto\/.+\.proto)$/.test(file)), dir).toEqual([]);
    if (dir === 'libraries/spiffe') expect(files).toContain('proto/workload.proto');
  });

  it('keeps only the repository root, the test package and the examples private', async () => {
    const examples = (await readdir(join(REPO, 'test/examples'))).map((name) => `test/examples/${name}`);
    for (const dir of ['.', 'test', ...examples]) {
      expect((JSON.parse(await readFile(join(REPO, dir, 'package.json'), 'utf8')) as { private?: boolean }).private, dir).toBe(true);
    }
  });
});

describe('installed from the packed tarballs, outside the repository', () => {
  let broker: string;
  let workload: string;
  let plugin: string;
  let serve: Serve | undefined;
  let idp: LoopbackIssuer;
  let acmeIdp: LoopbackIssuer;
  let stranger: LoopbackIssuer;
  let client: TestClient;
  let issuer: string;
  let workloadInstall: Promise<unknown>;

  beforeAll(async () => {
    broker = join(work, 'broker');
    workload = join(work, 'workload');
    plugin = join(work, 'plugin');
    for (const dir of [broker, workload]) {
      await mkdir(dir);
      await writeFile(join(dir, 'package.json'), `${JSON.stringify({ name: `tessera-${dir === broker ? 'broker' : 'workload'}-host`, private: true }, null, 2)}\n`);
    }
    // The workload side installs alone, in parallel: the client and the SPIFFE library it needs, no broker.
    workloadInstall = timed('install client', npm(['install', tarball('@tessera/client'), tarball('@tessera/spiffe')], workload)).then((ran) => succeeded('client install', ran));
    workloadInstall.catch(() => undefined);
    const install = succeeded(
      'broker install',
      await timed('install broker', npm(['install', tarball('@tessera/core'), tarball('@tessera/plugin-sdk'), tarball('@tessera/plugin-oidc'), tarball('@tessera/plugin-access-token')], broker)),
    );
    expect(install.stderr).not.toMatch(/ERESOLVE|peer dep/i);
    [idp, acmeIdp, stranger] = await Promise.all([LoopbackIssuer.start(), LoopbackIssuer.start(), LoopbackIssuer.start()]);
    client = await TestClient.create('workload-a');
  }, 240_000);

  afterAll(async () => {
    await stop(serve);
    await Promise.all([idp, acmeIdp, stranger].map((issuer) => issuer?.close()));
  });

  const tessera = () => join(broker, 'node_modules', '.bin', 'tessera');

  it('scaffolds a plugin with the installed tessera plugin init; it installs, builds and passes the contract kit', async () => {
    const init = succeeded('tessera plugin init', await run(process.execPath, [tessera(), 'plugin', 'init', PLUGIN, '--dir', plugin], { cwd: work }));
    expect(init.stdout).toContain('npm install && npm test');
    // A second run must not overwrite the author's files.
    expect((await run(process.execPath, [tessera(), 'plugin', 'init', PLUGIN, '--dir', plugin], { cwd: work })).code).toBe(1);

    const manifestPath = join(plugin, 'package.json');
    const manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as Record<string, Record<string, string>>;
    expect(manifest.peerDependencies).toEqual({ '@tessera/plugin-sdk': '^0.1.0' });
    expect(manifest.devDependencies).toMatchObject({ '@tessera/plugin-sdk': '^0.1.0', '@tessera/plugin-testkit': '^0.1.0' });
    // The registry would supply these; here the packed tarballs do. Core only because the testkit needs it
    // and it is not published yet. The peer range stays as scaffolded.
    Object.assign(manifest.devDependencies!, {
      '@tessera/plugin-sdk': `file:${tarball('@tessera/plugin-sdk')}`,
      '@tessera/plugin-testkit': `file:${tarball('@tessera/plugin-testkit')}`,
      '@tessera/core': `file:${tarball('@tessera/core')}`,
    });
    await writeFile(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`);

    const install = succeeded('plugin npm install', await timed('install plugin deps', npm(['install'], plugin)));
    expect(install.stderr).not.toMatch(/ERESOLVE|peer dep|EBADENGINE/i);
    expect(await copiesOf(plugin, '@tessera/plugin-sdk')).toHaveLength(1);

    // npm test: pretest builds with tsc, then vitest runs the contract suite against a real broker.
    const test = succeeded('plugin npm test', await timed('plugin test', npm(['test'], plugin)));
    const summary = test.stdout.replace(/\x1b\[[0-9;]*m/g, '');
    expect(summary).toMatch(/Tests\s+9 passed \(9\)/);
    expect(summary).not.toMatch(/skipped|failed/);

    const pack = succeeded('plugin npm pack', await npm(['pack', '--json', '--pack-destination', tarballs], plugin));
    const [entry] = JSON.parse(pack.stdout) as PackedEntry[];
    expect(entry!.files.map((file) => file.path).sort()).toEqual(['README.md', 'dist/index.d.ts', 'dist/index.js', 'package.json']);

    // The operator adds it beside the broker: the peer resolves to the broker's SDK, no second copy.
    const add = succeeded('install the plugin beside the broker', await timed('install plugin beside broker', npm(['install', join(tarballs, entry!.filename)], broker)));
    expect(add.stderr).not.toMatch(/ERESOLVE|peer dep/i);
    expect(await copiesOf(broker, '@tessera/plugin-sdk')).toEqual([join(broker, 'node_modules', '@tessera/plugin-sdk')]);
  }, 240_000);

  it('serves from the installed bin and completes RFC 8693 exchanges, through built-in and third-party plugins', async () => {
    const port = await freePort();
    issuer = `http://127.0.0.1:${port}`;
    const config = {
      issuer,
      listen: { host: '127.0.0.1', port },
      dataDir: 'data',
      keys: { generate: true },
      network: { allowLoopbackHttp: true },
      clients: [client.config(['token_exchange'])],
      plugins: [
        { use: '@tessera/plugin-oidc', config: { issuers: [{ issuer: idp.issuer }] } },
        { use: '@tessera/plugin-access-token', config: {} },
        { use: PLUGIN_PACKAGE, config: { issuer: acmeIdp.issuer } },
      ],
      policy: {
        rules: [
          allowRule(idp.issuer),
          { id: 'acme-jobs', match: { subjectTokenTypes: [PLUGIN_TOKEN_TYPE], attributes: { [`${PLUGIN}.subject`]: 'job-7' } }, grant: { audiences: [API], scopes: ['read'], maxLifetimeSeconds: 300 } },
        ],
      },
      log: { level: 'info' },
    };
    await writeFile(join(broker, 'tessera.json'), JSON.stringify(config));

    const list = succeeded('tessera plugins list', await run(process.execPath, [tessera(), 'plugins', 'list', '--config', 'tessera.json'], { cwd: broker }));
    expect(list.stdout).toContain(`${PLUGIN} 0.1.0 (${PLUGIN_PACKAGE}) API ^1`);
    expect(list.stdout).toContain(`validates ${PLUGIN_TOKEN_TYPE}`);

    serve = await serveInstalled(tessera(), 'tessera.json', broker, port);
    const exchange = async (subjectToken: string, subjectTokenType: string) =>
      postToken(`${issuer}/token`, {
        grant_type: TOKEN_EXCHANGE,
        subject_token: subjectToken,
        subject_token_type: subjectTokenType,
        requested_token_type: ACCESS_TOKEN,
        audience: API,
        scope: 'read',
        ...(await client.auth(`${issuer}/token`)),
      });
    const keys = createRemoteJWKSet(new URL(`${issuer}/keys`));

    const viaOidc = await exchange(await idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 600 }), ID_TOKEN);
    expect(viaOidc.status, viaOidc.text).toBe(200);
    expect(viaOidc.body).toMatchObject({ issued_token_type: ACCESS_TOKEN, token_type: 'Bearer', scope: 'read' });
    expect((await jwtVerify(viaOidc.body.access_token as string, keys, { issuer, audience: API, typ: 'at+jwt' })).payload.sub).toBe('alice');

    const viaPlugin = await exchange(await acmeIdp.mint({ sub: 'job-7', aud: issuer }, { expiresIn: 600 }), PLUGIN_TOKEN_TYPE);
    expect(viaPlugin.status, viaPlugin.text).toBe(200);
    expect((await jwtVerify(viaPlugin.body.access_token as string, keys, { issuer, audience: API })).payload.sub).toBe('job-7');

    // The third-party validator really decides: a token from an issuer it does not trust is refused.
    const refused = await exchange(await stranger.mint({ sub: 'job-7', aud: issuer }, { expiresIn: 600 }), PLUGIN_TOKEN_TYPE);
    expect(refused.status).toBe(400);
    expect(refused.body.error).toBe('invalid_request');
    expect(refused.body.access_token).toBeUndefined();
  }, 60_000);

  it('gives a workload tessera-exchange from @tessera/client alone, without the broker', async () => {
    await workloadInstall;
    expect(await copiesOf(workload, '@tessera/core')).toEqual([]);
    const help = await run(process.execPath, [join(workload, 'node_modules', '.bin', 'tessera-exchange'), '--help'], { cwd: workload });
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^tessera-exchange --broker URL --from /);
    const usage = await run(process.execPath, [join(workload, 'node_modules', '.bin', 'tessera-exchange'), '--from', 'k8s'], { cwd: workload });
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('--broker URL is required');
  }, 240_000);
});
