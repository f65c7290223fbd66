import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '@tessera/core';
import { gcpConfigSchema } from '../src/index.js';

describe('README examples', () => {
  it('are a valid plugin block and valid policy for the broker', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const blocks = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)].map((match) => match[1]!);
    const plugins = blocks.find((block) => block.startsWith('plugins:'));
    const policy = blocks.find((block) => block.startsWith('policy:'));
    expect(plugins && policy).toBeTruthy();
    const text = ['issuer: https://broker.example.com', 'keys: { generate: true }', 'clients: [{ id: gcp-workloads, auth: { method: none } }]', plugins, policy].join('\n');
    const { config } = parseConfigText(text, { file: 'README.md', baseDir: process.cwd() });
    expect(config.plugins[0]?.use).toBe('@tessera/plugin-gcp');
    expect(gcpConfigSchema.safeParse(config.plugins[0]?.config).error).toBeUndefined();
    expect(config.policy.rules.length).toBeGreaterThan(0);
  });
});
