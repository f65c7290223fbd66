import { createRequire } from 'node:module';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

export const PLUGIN_INIT_USAGE = `usage: tessera plugin init NAME [--dir DIR] [--package PACKAGE]

Writes a plugin package for a new token type into DIR (default ./NAME): package.json, src/index.ts
(definePlugin, a zod config schema, one validator), a contract test run by @tessera/plugin-testkit,
tsconfig.json and a README. It builds and passes its test as written: npm install && npm test.
NAME is the kebab-case plugin id; PACKAGE, the npm package name, defaults to tessera-plugin-NAME.
An existing DIR must be empty.

exit: 0 written, 1 DIR not empty or not writable, 2 usage

example:
  tessera plugin init ci-job --package @acme/tessera-plugin-ci-job
  cd ci-job && npm install && npm test
`;

const PLUGIN_NAME = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;
const PACKAGE_NAME = /^(@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*$/;

/**
 * Tool versions the templates pin: the ones this release is built and tested with. The SDK and testkit
 * ranges come from core's own package.json, so a scaffold always matches the broker that wrote it.
 */
const TOOL_VERSIONS = { typescript: '~6.0.3', vitest: '^5.1.0', '@types/node': '^24.19.2' } as const;

interface CorePackage {
  readonly version: string;
  readonly dependencies: Readonly<Record<string, string>>;
}

/** `1.2.3`, `^1.2.3` or `~1.2.3` → `^1.2.3`: the caret range npm can satisfy with the broker's own copy. */
function caret(version: string): string {
  return `^${version.replace(/^[~^]/, '')}`;
}

export interface ScaffoldOptions {
  /** Kebab-case plugin id. */
  readonly name: string;
  readonly packageName: string;
  readonly sdkRange: string;
  readonly testkitRange: string;
  readonly zodRange: string;
}

/** The files of a new plugin package, by path relative to its directory. */
export function scaffoldFiles(options: ScaffoldOptions): Record<string, string> {
  const { name, packageName } = options;
  const tokenType = `urn:example:token-type:${name}`;
  const manifest = {
    name: packageName,
    version: '0.1.0',
    description: `Tessera plugin: accepts ${name} tokens`,
    type: 'module',
    engines: { node: '>=22' },
    exports: { '.': { types: './dist/index.d.ts', default: './dist/index.js' } },
    files: ['dist'],
    scripts: { build: 'tsc', pretest: 'tsc', test: 'vitest run', prepack: 'tsc' },
    // A peer, so the broker's copy of the SDK is the one the plugin gets: its tokens are symbols and its
    // errors are compared with instanceof. The dev dependency is for building and testing on its own.
    peerDependencies: { '@tessera/plugin-sdk': options.sdkRange },
    dependencies: { zod: options.zodRange },
    devDependencies: {
      '@tessera/plugin-sdk': options.sdkRange,
      '@tessera/plugin-testkit': options.testkitRange,
      '@types/node': TOOL_VERSIONS['@types/node'],
      typescript: TOOL_VERSIONS.typescript,
      vitest: TOOL_VERSIONS.vitest,
    },
  };
  const tsconfig = {
    compilerOptions: {
      target: 'ES2023',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      types: ['node'],
      strict: true,
      declaration: true,
      skipLibCheck: true,
      rootDir: 'src',
      outDir: 'dist',
    },
    include: ['src'],
  };
  return {
    'package.json': `${JSON.stringify(manifest, null, 2)}\n`,
    'tsconfig.json': `${JSON.stringify(tsconfig, null, 2)}\n`,
    '.gitignore': 'node_modules/\ndist/\n*.tgz\n',
    'src/index.ts': `import { z } from 'zod';
import { definePlugin, InvalidToken, JwtVerifier, tokens, trustedIssuerSchema, type SubjectValidator } from '@tessera/plugin-sdk';

/** What callers put in \`subject_token_type\`. Replace \`example\` with a namespace you own. */
export const TOKEN_TYPE = '${tokenType}';

/** The block operators write under \`plugins[].config\`; it is also published in the broker's JSON Schema. */
const configSchema = z
  .object({
    issuer: z.url().describe('Exact \`iss\` of the tokens; their keys are found through OIDC discovery'),
    subjects: z.array(z.string().min(1)).min(1).optional().describe('When set, only these \`sub\` values are accepted'),
  })
  .strict();

export default definePlugin({
  name: '${name}',
  version: '0.1.0',
  apiVersion: '^1',
  description: 'Accepts ${name} tokens',
  config: configSchema,
  deps: { jwks: tokens.jwksCache, http: tokens.httpFetcher },
  init({ config, deps }) {
    // JwtVerifier: exact issuer, keys from that issuer only, algorithm allow-list, exp required,
    // audience naming the broker.
    const verifier = new JwtVerifier({ issuers: [trustedIssuerSchema.parse({ issuer: config.issuer })] }, deps);

    const validator: SubjectValidator = {
      tokenTypes: [TOKEN_TYPE],
      async validate(token, ctx) {
        const { identity } = await verifier.verify(token, ctx);
        // Name the claim, never its value: error details must not echo token contents.
        if (config.subjects && !config.subjects.includes(identity.subject)) throw new InvalidToken('claims', 'sub not allowed');
        // Policy sees only these attributes.
        return { ...identity, attributes: { '${name}.subject': identity.subject } };
      },
    };
    return { validators: [validator] };
  },
});
`,
    'test/contract.test.ts': `import { LoopbackIssuer } from '@tessera/plugin-testkit';
import { describeValidatorContract } from '@tessera/plugin-testkit/contract';

// A real broker loads the built package by name, as an operator's config would (npm test builds first).
describeValidatorContract('${name}', async () => {
  const idp = await LoopbackIssuer.start();
  const stranger = await LoopbackIssuer.start();
  return {
    tokenType: '${tokenType}',
    plugin: () => ({ use: '${packageName}', config: { issuer: idp.issuer } }),
    mint: ({ audience, expiresIn }) => idp.mint({ sub: 'workload-1', aud: audience }, { expiresIn }),
    mintUntrusted: ({ audience, expiresIn }) => stranger.mint({ sub: 'workload-1', aud: audience }, { expiresIn }),
    // Lets the kit try the algorithm-confusion forgery (HS256 keyed with this public key).
    trustedPublicJwk: idp.key.publicJwk,
    stallUpstream: () => idp.stall(),
    close: async () => {
      await idp.close();
      await stranger.close();
    },
  };
});
`,
    'README.md': `# ${packageName}

A Tessera plugin that accepts ${name} tokens (\`subject_token_type\` \`${tokenType}\`): JWTs from one
issuer, verified with the issuer's keys found through OIDC discovery.

## Develop

\`\`\`sh
npm install
npm test        # builds, then runs the @tessera/plugin-testkit contract suite against a real broker
\`\`\`

## Use

Install it beside the broker (\`npm install ${packageName}\`) and list it in the broker config:

\`\`\`yaml
plugins:
  - use: '${packageName}'
    config:
      issuer: https://issuer.example.com
\`\`\`

\`@tessera/plugin-sdk\` is a peer dependency: the plugin uses the broker's own copy.
\`tessera plugins list --config broker.yaml\` shows what it validates.
`,
  };
}

/** `tessera plugin init`. Returns the exit code; usage errors print the usage and return 2. */
export async function pluginCommand(args: string[], io = { out: (text: string) => void process.stdout.write(text), err: (text: string) => void process.stderr.write(text) }): Promise<number> {
  const usage = (message: string) => {
    io.err(`${message}\n\n${PLUGIN_INIT_USAGE}`);
    return 2;
  };
  const [sub, ...rest] = args;
  if (sub !== 'init') return usage(sub === undefined ? 'plugin needs a subcommand: init' : `unknown plugin subcommand ${sub}`);
  let parsed;
  try {
    parsed = parseArgs({ args: rest, allowPositionals: true, options: { dir: { type: 'string' }, package: { type: 'string' } } });
  } catch (error) {
    return usage((error as Error).message);
  }
  const [name, ...extra] = parsed.positionals;
  if (name === undefined || extra.length > 0) return usage('plugin init needs exactly one NAME');
  if (!PLUGIN_NAME.test(name)) return usage(`plugin name "${name}" must be kebab-case (e.g. ci-job)`);
  const packageName = parsed.values.package ?? `tessera-plugin-${name}`;
  if (!PACKAGE_NAME.test(packageName) || packageName.length > 214) return usage(`"${packageName}" is not a valid npm package name`);
  const dir = resolve(parsed.values.dir ?? name);

  const core = createRequire(import.meta.url)('../../package.json') as CorePackage;
  const sdk = core.dependencies['@tessera/plugin-sdk'];
  const zod = core.dependencies.zod;
  if (!sdk || !zod) throw new Error('core package.json lacks its @tessera/plugin-sdk or zod dependency');
  const files = scaffoldFiles({ name, packageName, sdkRange: caret(sdk), testkitRange: caret(core.version), zodRange: zod });

  try {
    await mkdir(dir, { recursive: true });
    // Never overwrite: an author's existing work is worth more than a scaffold.
    if ((await readdir(dir)).length > 0) {
      io.err(`tessera plugin init: ${dir} is not empty\n`);
      return 1;
    }
    for (const [path, text] of Object.entries(files)) {
      await mkdir(join(dir, path, '..'), { recursive: true });
      await writeFile(join(dir, path), text, { flag: 'wx' });
    }
  } catch (error) {
    io.err(`tessera plugin init: ${(error as Error).message}\n`);
    return 1;
  }
  io.out(`wrote plugin ${name} (${packageName}) to ${dir}:\n${Object.keys(files).map((path) => `  ${path}\n`).join('')}next: cd ${dir} && npm install && npm test\n`);
  return 0;
}
