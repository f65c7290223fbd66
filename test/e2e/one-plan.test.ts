import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:net';
import { cp, mkdir, mkdtemp, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, freePort, killServes, Serve } from './serve.js';

const REPO = resolve(import.meta.dirname, '../..');
const FIXTURES = join(import.meta.dirname, 'fixtures');

afterAll(killServes);

/** Runs the CLI; resolves with its exit code and output (a non-zero exit is an answer, not a failure). */
function tessera(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } }, (error, stdout, stderr) => done({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }));
  });
}

async function scratch(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'tessera-one-plan-'));
}

/** A broker config whose every other part is fine; `extra` lines are appended at the top level. */
function brokerYaml(dir: string, plugins: readonly string[], extra: readonly string[] = []): string {
  return [
    'issuer: http://127.0.0.1:9',
    `dataDir: ${join(dir, 'data')}`,
    'keys: { generate: true }',
    `audit: { destination: { file: ${join(dir, 'audit', 'audit.jsonl')} } }`,
    'plugins:',
    ...plugins.map((use) => `  - use: "${use}"`),
    ...extra,
    '',
  ].join('\n');
}

describe('config validate plans the broker as serve does', () => {
  it('reports problems of every stage at once, each at file:line: plugin start, front doors, admin clients, audit directory', async () => {
    const dir = await scratch();
    const file = join(dir, 'broker.yaml');
    await writeFile(
      file,
      brokerYaml(dir, ['@tessera/plugin-access-token', join(FIXTURES, 'failing-plugin.mjs')], [
        'endpoints:',
        '  introspection: { enabled: true, clients: [nobody] }',
        'admin: { clients: [ghost] }',
      ]),
    );
    const run = await tessera(['config', 'validate', file]);
    expect(run.code).toBe(1);
    const lines = run.stderr.trimEnd().split('\n');
    // The plugin's own error, named by the plugin; the audit directory that does not exist; the doors and admin.
    expect(lines).toContain(`${file}:7: plugins[1]: plugin "failing" failed to start: backend unreachable`);
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${file}:4: audit\\.destination\\.file: the directory \\S+ does not exist$`)));
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${file}:9: endpoints\\.introspection\\.clients\\[0\\]: "nobody" is not a configured client`)));
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${file}:10: admin\\.clients`)));
    // Every line is located.
    for (const line of lines) expect(line.startsWith(`${file}:`), line).toBe(true);
  });

  it('serve refuses the same config for the same reasons, naming the plugin that failed to start', async () => {
    const dir = await scratch();
    const file = join(dir, 'broker.yaml');
    await mkdir(join(dir, 'audit'));
    await writeFile(file, brokerYaml(dir, ['@tessera/plugin-access-token', join(FIXTURES, 'failing-plugin.mjs')]));
    const [validate, serve] = await Promise.all([tessera(['config', 'validate', file]), tessera(['serve', '--config', file], { PORT: String(await freePort()) })]);
    expect(validate).toMatchObject({ code: 1, stderr: `${file}:7: plugins[1]: plugin "failing" failed to start: backend unreachable\n` });
    expect(serve.code).toBe(1);
    expect(serve.stderr).toContain(`${file}:7: plugins[1]: plugin "failing" failed to start: backend unreachable`);
  });

  it('serve reads its key files before any plugin starts, and locates a bad one', async () => {
    const dir = await scratch();
    await mkdir(join(dir, 'audit'));
    const file = join(dir, 'broker.yaml');
    await writeFile(file, brokerYaml(dir, [join(FIXTURES, 'failing-plugin.mjs')]).replace('keys: { generate: true }', `keys: { files: [{ path: ${join(dir, 'missing.pem')} }] }`));
    const serve = await tessera(['serve', '--config', file], { PORT: String(await freePort()) });
    expect(serve.code).toBe(1);
    expect(serve.stderr).toContain(`${file}:3: keys.files[0].path: cannot read the key file`);
    // The plugin (whose init would fail loudly) never started.
    expect(serve.stderr).not.toContain('backend unreachable');
  });

  it('writes nothing and names what only the network could tell', async () => {
    const dir = await scratch();
    const file = join(dir, 'broker.yaml');
    await mkdir(join(dir, 'audit'));
    await writeFile(file, brokerYaml(dir, ['@tessera/plugin-access-token'], ['store: { kind: redis, url: "redis://127.0.0.1:9" }']));
    const run = await tessera(['config', 'validate', file]);
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(run.stdout).toContain('not checked: store: the Redis server is not contacted');
    // No development key was generated, no audit file created.
    expect(await readdir(dir)).toEqual(['audit', 'broker.yaml']);
    expect(await readdir(join(dir, 'audit'))).toEqual([]);
  });
});

describe('read-only commands release what plugins opened', () => {
  it('a plugin whose close throws is named, and the plugins after it are still closed', async () => {
    const dir = await scratch();
    await mkdir(join(dir, 'audit'));
    const marker = join(dir, 'closed.txt');
    const file = join(dir, 'broker.yaml');
    await writeFile(
      file,
      brokerYaml(dir, []).replace(
        'plugins:\n',
        `plugins:\n  - use: "${join(FIXTURES, 'sticky-plugin.mjs')}"\n    config: { marker: "${marker}" }\n  - use: "${join(FIXTURES, 'unclosable-plugin.mjs')}"\n  - use: "@tessera/plugin-access-token"\n`,
      ),
    );
    for (const command of [['config', 'validate'], ['plugins', 'list']]) {
      const started = Date.now();
      const run = await tessera([...command, file]);
      expect(run.code, command.join(' ')).toBe(1);
      expect(run.stderr).toContain('plugin "unclosable" failed to close: socket already gone');
      // Exited on its own, long before the CLI's last-resort exit (2 s): nothing was left open.
      expect(Date.now() - started, command.join(' ')).toBeLessThan(2_000);
    }
    expect(await readFile(marker, 'utf8')).toBe('closed\nclosed\n');
  });
});

describe('read-only commands dial nothing', () => {
  it('validate and plugins list never connect to the SPIRE agent or the Workload API (serve does, at startup)', async () => {
    const dir = await scratch();
    // Listeners where the example configs' sockets are: any connection is counted.
    let connections = 0;
    const listeners = await Promise.all(
      ['admin.sock', 'api.sock'].map(async (name) => {
        const server = createServer((socket) => {
          connections++;
          socket.destroy();
        });
        await new Promise<void>((done) => server.listen(join(dir, name), done));
        return server;
      }),
    );
    const keyDir = join(dir, 'keys');
    await mkdir(keyDir);
    for (const name of ['signing-2025-06.pem', 'signing-2025-01.pem', 'signing.pem']) {
      await writeFile(join(keyDir, name), generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    }
    const env = { SPIRE_ADMIN_SOCKET: `unix://${join(dir, 'admin.sock')}`, SPIFFE_ENDPOINT_SOCKET: `unix://${join(dir, 'api.sock')}`, TESSERA_KEY_DIR: keyDir };
    try {
      for (const example of ['cloud-to-spiffe.yaml', 'spiffe-to-oauth.yaml', 'agent-delegation.yaml']) {
        const file = join(REPO, 'config', 'examples', example);
        const started = Date.now();
        const validate = await tessera(['config', 'validate', file], env);
        expect(validate, example).toMatchObject({ code: 0, stderr: '' });
        expect((await tessera(['plugins', 'list', file], env)).code, example).toBe(0);
        // The SPIFFE plugin waits for Workload API bundles when serving; a check waits for nothing.
        expect(Date.now() - started, example).toBeLessThan(10_000);
      }
      expect(connections).toBe(0);
    } finally {
      for (const server of listeners) server.close();
    }
  });
});

describe('plugin load errors name the cause', () => {
  /** A package under `dir/node_modules/NAME` exporting `source`, with `manifest` merged into its package.json. */
  async function installFake(dir: string, name: string, source: string, manifest: Record<string, unknown> = {}): Promise<void> {
    const root = join(dir, 'node_modules', name);
    await mkdir(root, { recursive: true });
    await writeFile(join(root, 'package.json'), JSON.stringify({ name, version: '1.0.0', type: 'module', exports: './index.js', ...manifest }));
    await writeFile(join(root, 'index.js'), source);
  }
  const definition = (name: string) =>
    `import { definePlugin } from '@tessera/plugin-sdk';\nimport { z } from 'zod';\nexport default definePlugin({ name: '${name}', version: '1.0.0', apiVersion: '^1', config: z.object({}), deps: {}, init: () => ({}) });\n`;

  async function validateWith(dir: string, uses: readonly string[]): Promise<string[]> {
    await mkdir(join(dir, 'audit'), { recursive: true });
    const file = join(dir, 'broker.yaml');
    await writeFile(file, brokerYaml(dir, uses));
    const run = await tessera(['config', 'validate', file]);
    expect(run.code).toBe(1);
    return run.stderr.trimEnd().split('\n');
  }

  it('a missing file, an import that throws, a default export of the wrong shape, an SDK range the broker does not meet', async () => {
    const dir = await scratch();
    await installFake(dir, 'throws-at-import', "throw new Error('missing TEAM_DIRECTORY_URL');\n");
    await installFake(dir, 'wrong-shape', 'export default function plugin() {}\n');
    await installFake(dir, 'future-sdk', "export default {};\n", { peerDependencies: { '@tessera/plugin-sdk': '^9.0.0' } });
    const lines = await validateWith(dir, ['throws-at-import', 'wrong-shape', 'future-sdk', './no-such-plugin.js']);
    expect(lines).toEqual([
      expect.stringMatching(/:6: plugins\[0\]\.use: importing plugin "throws-at-import" threw: missing TEAM_DIRECTORY_URL$/),
      expect.stringMatching(/:7: plugins\[1\]\.use: the default export of "wrong-shape" is a function, not the result of definePlugin\(\) from @tessera\/plugin-sdk$/),
      expect.stringMatching(/:8: plugins\[2\]\.use: plugin "future-sdk" needs @tessera\/plugin-sdk \^9\.0\.0, the broker has 0\.1\.0$/),
      `${join(dir, 'broker.yaml')}:9: plugins[3].use: plugin file "./no-such-plugin.js" does not exist (looked for ${join(dir, 'no-such-plugin.js')})`,
    ]);
  });

  it('a second copy of the SDK in the tree is named, not surfaced as a DI error', async () => {
    const dir = await scratch();
    // The plugin resolves its own SDK (a copy of the real one), as after an install that did not dedupe.
    const sdk = join(dir, 'node_modules', '@tessera', 'plugin-sdk');
    await mkdir(dirname(sdk), { recursive: true });
    await cp(join(REPO, 'libraries', 'sdk'), sdk, { recursive: true, filter: (path) => !path.includes('node_modules') && !path.includes(`${join(REPO, 'libraries', 'sdk')}/src`) });
    await installFake(dir, 'duplicate-sdk', definition('duplicate-sdk'), { peerDependencies: { '@tessera/plugin-sdk': '^0.1.0' } });
    const lines = await validateWith(dir, ['duplicate-sdk']);
    expect(lines).toEqual([expect.stringMatching(/:6: plugins\[0\]\.use: plugin "duplicate-sdk" loads a second copy of @tessera\/plugin-sdk \(.+; the broker's is .+\): make the SDK a peerDependency/)]);
  });
});

describe('plugins are resolved as import() would resolve them', () => {
  /** `dir/node_modules/NAME` → the repo's own package: one copy, as after an install beside the broker. */
  async function linkRepoPackage(dir: string, name: string): Promise<void> {
    const target = join(dir, 'node_modules', name);
    await mkdir(dirname(target), { recursive: true });
    await symlink(join(REPO, 'node_modules', name), target);
  }

  it('loads the ESM entry of a package that also ships CommonJS', async () => {
    const dir = await scratch();
    await linkRepoPackage(dir, '@tessera/plugin-sdk');
    await linkRepoPackage(dir, 'zod');
    const root = join(dir, 'node_modules', 'dual-plugin');
    await mkdir(root, { recursive: true });
    await writeFile(join(root, 'package.json'), JSON.stringify({ name: 'dual-plugin', version: '1.0.0', exports: { import: './esm.mjs', require: './cjs.cjs' }, peerDependencies: { '@tessera/plugin-sdk': '^0.1.0' } }));
    await writeFile(join(root, 'cjs.cjs'), 'module.exports = { note: "the CommonJS build" };\n');
    await writeFile(
      join(root, 'esm.mjs'),
      "import { definePlugin } from '@tessera/plugin-sdk';\nimport { z } from 'zod';\nexport default definePlugin({ name: 'dual', version: '1.0.0', apiVersion: '^1', config: z.object({}), deps: {}, init: () => ({}) });\n",
    );
    await mkdir(join(dir, 'audit'));
    const file = join(dir, 'broker.yaml');
    await writeFile(file, brokerYaml(dir, ['dual-plugin', '@tessera/plugin-access-token']));
    const run = await tessera(['plugins', 'list', file]);
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(run.stdout).toContain('dual 1.0.0 (dual-plugin) API ^1');
  });

  it('finds a second SDK copy beside a path plugin in a directory whose package.json has no name', async () => {
    const dir = await scratch();
    const plugins = join(dir, 'plugins');
    const sdk = join(plugins, 'node_modules', '@tessera', 'plugin-sdk');
    await mkdir(dirname(sdk), { recursive: true });
    await cp(join(REPO, 'libraries', 'sdk'), sdk, { recursive: true, filter: (path) => !path.includes('node_modules') && !path.includes(`${join(REPO, 'libraries', 'sdk')}/src`) });
    // What `npm install @tessera/plugin-sdk` writes in a plain directory: dependencies, no name.
    await writeFile(join(plugins, 'package.json'), JSON.stringify({ dependencies: { '@tessera/plugin-sdk': '^0.1.0' } }));
    await writeFile(join(plugins, 'mine.mjs'), "import { definePlugin } from '@tessera/plugin-sdk';\nexport default definePlugin({ name: 'mine', version: '1.0.0', apiVersion: '^1', config: {}, deps: {}, init: () => ({}) });\n");
    await mkdir(join(dir, 'audit'));
    const file = join(dir, 'broker.yaml');
    await writeFile(file, brokerYaml(dir, ['./plugins/mine.mjs']));
    const run = await tessera(['config', 'validate', file]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/:6: plugins\[0\]\.use: plugin "\.\/plugins\/mine\.mjs" loads a second copy of @tessera\/plugin-sdk/);
  });
});

describe('tessera healthcheck', () => {
  it('exits 0 for a live and a ready broker, 1 when nothing answers', async () => {
    const dir = await scratch();
    const file = join(dir, 'broker.yaml');
    await mkdir(join(dir, 'audit'));
    await writeFile(file, brokerYaml(dir, ['@tessera/plugin-access-token']));
    const port = await freePort();
    const serve = await Serve.start(file, port);
    try {
      expect(await tessera(['healthcheck', '--url', `http://127.0.0.1:${port}/healthz`])).toMatchObject({ code: 0, stdout: `http://127.0.0.1:${port}/healthz: live\n` });
      // From the config: the listen address, PORT honoured as serve honours it.
      expect(await tessera(['healthcheck', '--ready', '--config', file], { PORT: String(port) })).toMatchObject({ code: 0, stdout: `http://127.0.0.1:${port}/readyz: ready\n` });
    } finally {
      serve.child.kill('SIGKILL');
      await serve.exited;
    }
    const down = await tessera(['healthcheck'], { PORT: String(port) });
    expect(down.code).toBe(1);
    expect(down.stderr).toBe(`http://127.0.0.1:${port}/healthz: ECONNREFUSED\n`);
    expect((await tessera(['healthcheck', '--timeout-ms', 'soon'])).code).toBe(2);
  });
});
