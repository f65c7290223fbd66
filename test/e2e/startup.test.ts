import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { ConfigError, createBroker, MemoryAuditSink, silentLogger, validateConfig } from '@tessera/core';
import { accessTokenPlugin } from './support.js';

const base = async (plugins: unknown[]) =>
  validateConfig({ issuer: 'http://127.0.0.1:9', dataDir: await mkdtemp(join(tmpdir(), 'tessera-start-')), keys: { generate: true }, plugins });
const options = { baseDir: import.meta.dirname, logger: silentLogger, audit: new MemoryAuditSink() };

it('releases plugins already started when a later plugin fails to start', async () => {
  const global = globalThis as { tesseraClosedPlugins?: number };
  global.tesseraClosedPlugins = 0;
  await expect(createBroker(await base([{ use: './fixtures/closing-plugin.mjs' }, { use: './fixtures/failing-plugin.mjs' }]), options)).rejects.toThrow('backend unreachable');
  expect(global.tesseraClosedPlugins).toBe(1);
});

it('stops startup with one message naming both plugins when a token type is claimed twice', async () => {
  const config = await base([accessTokenPlugin, { use: './fixtures/closing-plugin.mjs' }, { use: './fixtures/twin-access-token.mjs' }]);
  const global = globalThis as { tesseraClosedPlugins?: number };
  global.tesseraClosedPlugins = 0;
  const error = await createBroker(config, options).catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(ConfigError);
  expect((error as ConfigError).message).toBe(
    'token type urn:ietf:params:oauth:token-type:access_token is claimed by two issuers: plugin "access-token" and plugin "twin-access-token"',
  );
  expect(global.tesseraClosedPlugins).toBe(1);
});
