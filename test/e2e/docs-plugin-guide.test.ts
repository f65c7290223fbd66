import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { parseConfigText, resolvePlugins } from '@tessera/core';

const root = new URL('../../', import.meta.url);
const guide = await readFile(new URL('docs/plugins.md', root), 'utf8');

/** Fenced blocks preceded by an HTML comment marker, e.g. `<!-- file: path -->`. */
function markedBlocks(marker: string): { target: string; body: string }[] {
  const pattern = new RegExp(`<!-- ${marker}: ([^>]+?) -->\\n\`\`\`[a-z]*\\n([\\s\\S]*?)\`\`\`\\n`, 'g');
  return [...guide.matchAll(pattern)].map((match) => ({ target: match[1]!, body: match[2]! }));
}

describe('docs/plugins.md', () => {
  const files = markedBlocks('file');

  it('shows the example plugin exactly as it is built and tested', async () => {
    expect(files.map((file) => file.target)).toEqual([
      'test/examples/ci-job/package.json',
      'test/examples/ci-job/tsconfig.json',
      'test/examples/ci-job/src/index.ts',
      'test/examples/ci-job/test/contract.test.ts',
    ]);
    for (const { target, body } of files) expect(body, target).toBe(await readFile(new URL(target, root), 'utf8'));
  });

  it('keeps the minimal plugin under 60 lines', () => {
    const plugin = files.find((file) => file.target.endsWith('src/index.ts'))!;
    expect(plugin.body.trimEnd().split('\n').length).toBeLessThan(60);
  });

  it('shows a config that validates, plugin block included', async () => {
    const [config] = markedBlocks('config');
    const loaded = parseConfigText(config!.body, { file: 'docs/plugins.md', baseDir: import.meta.dirname });
    const plugins = await resolvePlugins(loaded.config.plugins, loaded.baseDir, loaded.locate);
    expect(plugins.map((plugin) => plugin.definition.name)).toEqual(['ci-job', 'access-token']);
    expect(plugins[0]!.config).toEqual({ issuer: 'https://ci.example.com', projects: ['web', 'billing'] });
  });
});
