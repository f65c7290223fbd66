import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, type Serve } from './serve.js';
import { cleanEnv, copiesOf, REPO, run, serveInstalled, stop, succeeded } from './installed.js';
import { ACCESS_TOKEN, allowRule, API, ID_TOKEN, LoopbackIssuer, postToken, TestClient, TOKEN_EXCHANGE } from './support.js';

/**
 * The production bundle the Dockerfile copies into its runtime stage, made by the same script
 * (scripts/bundle.sh), then run as the image runs it: from an otherwise empty working directory that
 * holds only a config.
 */
describe('the production bundle (scripts/bundle.sh)', () => {
  let work: string;
  let bundle: string;
  let bundleSeconds: number;
  let serve: Serve | undefined;
  let idp: LoopbackIssuer;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'tessera-bundle-'));
    bundle = join(work, 'opt-tessera');
    bundleSeconds = succeeded('scripts/bundle.sh', await run('bash', [join(REPO, 'scripts/bundle.sh'), bundle], { cwd: REPO })).seconds;
    idp = await LoopbackIssuer.start();
  }, 240_000);

  afterAll(async () => {
    await stop(serve);
    await idp?.close();
    if (work) await rm(work, { recursive: true, force: true });
    console.info(`bundle: scripts/bundle.sh took ${bundleSeconds}s`);
  });

  it('holds the broker, every built-in plugin and production dependencies only', async () => {
    const tessera = (await readdir(join(bundle, 'node_modules', '@tessera'))).sort();
    const plugins = (await readdir(join(REPO, 'plugins'))).map((name) => `plugin-${name}`);
    expect(tessera).toEqual(['core', 'plugin-sdk', 'spiffe', ...plugins].sort());
    for (const devOnly of ['@tessera/plugin-testkit', '@tessera/client', 'vitest', 'typescript', 'turbo', 'node', 'fast-check']) {
      expect(await copiesOf(bundle, devOnly), devOnly).toEqual([]);
    }
    expect(await copiesOf(bundle, '@tessera/plugin-sdk')).toHaveLength(1);
    // Self-contained: the manifest and lockfile name tarballs inside the bundle.
    const manifest = JSON.parse(await readFile(join(bundle, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    for (const spec of Object.values(manifest.dependencies)) await stat(join(bundle, spec.replace(/^file:/, '')));
    // A second run refuses to mix into an existing bundle.
    expect((await run('bash', [join(REPO, 'scripts/bundle.sh'), bundle], { cwd: REPO })).code).toBe(1);
  });

  it('runs the broker from an empty directory and completes a token exchange', async () => {
    const cwd = join(work, 'run');
    await mkdir(cwd);
    const port = await freePort();
    const issuer = `http://127.0.0.1:${port}`;
    const client = await TestClient.create('workload-a');
    await writeFile(
      join(cwd, 'config.json'),
      JSON.stringify({
        issuer,
        listen: { host: '127.0.0.1', port },
        dataDir: 'data',
        keys: { generate: true },
        network: { allowLoopbackHttp: true },
        clients: [client.config(['token_exchange'])],
        plugins: [{ use: '@tessera/plugin-oidc', config: { issuers: [{ issuer: idp.issuer }] } }, { use: '@tessera/plugin-access-token' }],
        policy: { rules: [allowRule(idp.issuer)] },
      }),
    );
    expect(await readdir(cwd)).toEqual(['config.json']);

    serve = await serveInstalled(join(bundle, 'node_modules', '.bin', 'tessera'), 'config.json', cwd, port);
    const call = await postToken(`${issuer}/token`, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: await idp.mint({ sub: 'alice', aud: issuer }, { expiresIn: 600 }),
      subject_token_type: ID_TOKEN,
      requested_token_type: ACCESS_TOKEN,
      audience: API,
      scope: 'read',
      ...(await client.auth(`${issuer}/token`)),
    });
    expect(call.status, call.text).toBe(200);
    expect(call.body).toMatchObject({ issued_token_type: ACCESS_TOKEN, token_type: 'Bearer', scope: 'read' });
    // The image's HEALTHCHECK, as the Dockerfile runs it (PORT, default URL).
    const health = await run(process.execPath, [join(bundle, 'node_modules', '.bin', 'tessera'), 'healthcheck'], { cwd, env: cleanEnv({ PORT: String(port) }) });
    expect(health.code, health.stderr).toBe(0);
  }, 60_000);
});
