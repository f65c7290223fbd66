import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { checkConfig, parseConfigText, resolvePlugins, type LoadedConfig } from '@tessera/core';
import { EXCHANGE_USAGE, TOKEN_TYPES } from '@tessera/client';

const REPO = resolve(import.meta.dirname, '../..');
const DOC = 'docs/clouds.md';
const doc = await readFile(join(REPO, DOC), 'utf8');
const MARKER = '<!-- config: validated in CI -->';

/** The cloud plugins, by the attribute prefix each one owns. */
const CLOUD_PLUGINS = { k8s: 'kubernetes', aws: 'aws', gcp: 'gcp', azure: 'azure' } as const;
/** Plugins that issue tokens: their `tokenTypes` are requested types, a registry of their own. */
const ISSUER_PLUGINS = new Set(['access-token', 'spire-jwt-svid']);

interface Block {
  readonly line: number;
  readonly body: string;
}

/** Every block the doc promises is copyable: the marker line, then a ```yaml fence directly after it. */
function markedBlocks(): { blocks: Block[]; strays: number[] } {
  const lines = doc.split('\n');
  const blocks: Block[] = [];
  const strays: number[] = [];
  lines.forEach((line, index) => {
    if (line.trim() !== MARKER) return;
    if (lines[index + 1] !== '```yaml') return void strays.push(index + 1);
    const end = lines.indexOf('```', index + 2);
    if (end === -1) return void strays.push(index + 1);
    blocks.push({ line: index + 3, body: `${lines.slice(index + 2, end).join('\n')}\n` });
  });
  return { blocks, strays };
}

const { blocks, strays } = markedBlocks();

/** Attribute names each plugin documents in its README's attribute table. */
async function documentedAttributes(): Promise<Set<string>> {
  const names = new Set<string>();
  for (const plugin of Object.values(CLOUD_PLUGINS)) {
    const readme = await readFile(join(REPO, 'plugins', plugin, 'README.md'), 'utf8');
    for (const match of readme.matchAll(/^\| `((?:k8s|aws|gcp|azure)\.[A-Za-z]+)` \|/gm)) names.add(match[1]!);
  }
  return names;
}

/** Example configs name production key paths through TESSERA_KEY_DIR: real keys are made for them here. */
let keyDir = '';
beforeAll(async () => {
  keyDir = await mkdtemp(join(tmpdir(), 'tessera-docs-clouds-keys-'));
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  await writeFile(join(keyDir, 'signing-2025-06.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
});

const load = (block: Block): LoadedConfig =>
  parseConfigText(block.body, { file: `${DOC} (block at line ${block.line})`, baseDir: join(REPO, 'docs'), env: { ...process.env, TESSERA_KEY_DIR: keyDir } });

describe(DOC, () => {
  it('marks a copyable config block for each cloud, each directly before its ```yaml fence', () => {
    expect(strays, `markers not followed by a yaml block, at lines ${strays.join(', ')}`).toEqual([]);
    expect(blocks.length).toBeGreaterThanOrEqual(4);
  });

  for (const block of blocks) {
    describe(`config block at line ${block.line}`, () => {
      it('is a complete broker config: issuer, keys, clients, plugins, policy', () => {
        const { config } = load(block);
        expect(config.issuer).toMatch(/^https:\/\//);
        expect(config.keys.files.length > 0 || config.keys.generate).toBe(true);
        expect(config.clients.length).toBeGreaterThan(0);
        expect(config.plugins.length).toBeGreaterThan(0);
        expect(config.policy.rules.length).toBeGreaterThan(0);
      });

      it('passes each plugin schema and tessera config validate', async () => {
        const loaded = load(block);
        await expect(resolvePlugins(loaded.config.plugins, loaded.baseDir, loaded.locate)).resolves.toHaveLength(loaded.config.plugins.length);
        await expect(checkConfig(loaded)).resolves.toBeInstanceOf(Array);
      });

      it('claims no subject token type twice (config validate cannot see this; startup would stop)', async () => {
        const loaded = load(block);
        const claims = (await resolvePlugins(loaded.config.plugins, loaded.baseDir, loaded.locate))
          .filter((plugin) => !ISSUER_PLUGINS.has(plugin.definition.name))
          .flatMap((plugin) => ((plugin.config as { tokenTypes?: string[] }).tokenTypes ?? []).map((urn) => `${urn} (${plugin.definition.name})`));
        const urns = claims.map((claim) => claim.split(' ')[0]);
        expect(claims.filter((_, index) => urns.indexOf(urns[index]) !== index)).toEqual([]);
      });

      it('writes policy on attributes the loaded cloud plugins document', async () => {
        const { config } = load(block);
        const known = await documentedAttributes();
        const loaded = new Set(config.plugins.map((plugin) => plugin.use));
        const used = config.policy.rules.flatMap((rule) => [
          ...Object.keys(rule.match.attributes ?? {}),
          ...Object.values(rule.grant.issuerParameters)
            .flat()
            .flatMap((template) => [...template.matchAll(/\{attributes\.([^{}]+)\}/g)].map((match) => match[1]!)),
        ]);
        expect(used.length).toBeGreaterThan(0);
        for (const name of used) {
          expect(known, `${name}: not in the plugin README's attribute table`).toContain(name);
          const owner = CLOUD_PLUGINS[name.split('.')[0] as keyof typeof CLOUD_PLUGINS];
          expect(loaded, `${name}: its plugin is not in this block`).toContain(`@tessera/plugin-${owner}`);
        }
      });
    });
  }

  it('covers every cloud plugin in its validated blocks', async () => {
    const names = new Set<string>();
    for (const block of blocks) {
      const loaded = load(block);
      for (const plugin of await resolvePlugins(loaded.config.plugins, loaded.baseDir, loaded.locate)) names.add(plugin.definition.name);
    }
    expect([...names]).toEqual(expect.arrayContaining(Object.values(CLOUD_PLUGINS)));
  });

  it('lists the URN the client sends and every default URN each cloud plugin answers', async () => {
    const table = doc.slice(doc.indexOf('## Token types'), doc.indexOf('\n## ', doc.indexOf('## Token types') + 1));
    for (const source of ['k8s', 'aws', 'gcp', 'azure'] as const) expect(table).toContain(`| \`${source}\` | \`${TOKEN_TYPES[source]}\` |`);
    for (const plugin of Object.values(CLOUD_PLUGINS)) {
      const definition = ((await import(`@tessera/plugin-${plugin}`)) as { default: { config: { parse(input: unknown): { tokenTypes: string[] } } } }).default;
      // The smallest block each schema accepts: only the defaults are of interest here.
      const minimal = {
        kubernetes: { clusters: [{ name: 'a', mode: 'offline', issuer: 'https://a.example.com' }] },
        aws: { accounts: ['123456789012'] },
        gcp: { projects: ['web-prod'] },
        azure: { tenants: ['3f2d8a61-0c4e-4b7a-9d52-7e1f0a6b9c11'], audiences: ['api://a'] },
      }[plugin];
      for (const urn of definition.config.parse(minimal).tokenTypes) expect(table, `${plugin} answers ${urn}`).toContain(`\`${urn}\``);
    }
  });

  it('shows tessera exchange commands with options and sources the CLI has', () => {
    const options = new Set([...EXCHANGE_USAGE.matchAll(/^ {2}--([a-z-]+)/gm)].map((match) => match[1]!));
    const sources = new Set(Object.keys(TOKEN_TYPES));
    const commands = [...doc.matchAll(/```sh\n([\s\S]*?)```/g)]
      .flatMap((match) => match[1]!.replace(/\\\n\s*/g, ' ').split('\n'))
      .filter((line) => line.startsWith('tessera exchange '));
    expect(commands.length).toBeGreaterThanOrEqual(5);
    for (const command of commands) {
      for (const [, option] of command.matchAll(/ --([a-z-]+)/g)) expect(options, `${command}: --${option}`).toContain(option);
      const from = / --from (\S+)/.exec(command)?.[1];
      expect(from, command).toBeDefined();
      for (const source of from!.split('|')) expect(sources, command).toContain(source);
    }
  });
});
