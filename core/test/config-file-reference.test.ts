import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../src/config/errors.js';
import { FILE_REFERENCE_MAX_BYTES, loadConfigFiles, parseConfigText } from '../src/config/load.js';

const lines = (...rows: string[]) => `${rows.join('\n')}\n`;
const HASH = '$scrypt$N=16384,r=8,p=1$c2FsdA$aGFzaA';

let dir = '';
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tessera-file-ref-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function write(name: string, content: string | Buffer): Promise<string> {
  const path = join(dir, name);
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, content);
  return path;
}

async function loadError(paths: string[], env = {}): Promise<ConfigError> {
  const error = await loadConfigFiles(paths, env).catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(ConfigError);
  return error as ConfigError;
}

const secretClient = (reference: string) => ['clients:', '  - id: billing', '    auth:', '      method: client_secret_basic', `      secretHash: "${reference}"`];

describe('${file:PATH} references', () => {
  it('resolves a relative PATH against the directory of the file holding the reference', async () => {
    const base = await write('base.yaml', lines('issuer: https://broker.example'));
    await write('overlays/secrets/billing.hash', `${HASH}\n`);
    const overlay = await write('overlays/billing.yaml', lines(...secretClient('${file:secrets/billing.hash}')));
    const loaded = await loadConfigFiles([base, overlay], {});
    expect(loaded.config.clients[0]!.auth).toEqual({ method: 'client_secret_basic', secretHash: HASH });
    expect(loaded.baseDir).toBe(dir);
  });

  it('removes exactly one trailing newline and keeps the rest of the content', async () => {
    await write('crlf', 'value\r\n');
    await write('two', 'value\n\n');
    await write('none', '  value ');
    const base = await write(
      'broker.yaml',
      lines('issuer: https://broker.example', 'plugins:', '  - use: ./p.js', '    config: { crlf: "${file:crlf}", two: "${file:two}", none: "a-${file:none}-b" }'),
    );
    const { config } = await loadConfigFiles([base], {});
    expect(config.plugins[0]!.config).toEqual({ crlf: 'value', two: 'value\n', none: 'a-  value -b' });
  });

  it('accepts an absolute PATH and a file of exactly 64 KiB', async () => {
    const big = await write('big', 'x'.repeat(FILE_REFERENCE_MAX_BYTES));
    const { config } = parseConfigText(lines('issuer: https://broker.example', `dataDir: \${file:${big}}`), { file: 'broker.yaml', baseDir: '/nonexistent', env: {} });
    expect(config.dataDir).toHaveLength(FILE_REFERENCE_MAX_BYTES);
  });

  it('reports a missing file with file:line, the config path and the PATH', async () => {
    const base = await write('broker.yaml', lines('issuer: https://broker.example', ...secretClient('${file:missing.hash}')));
    const error = await loadError([base]);
    expect(error.problems).toEqual([`${base}:6: clients[0].auth.secretHash: \${file:missing.hash}: cannot read ${join(dir, 'missing.hash')} (ENOENT)`]);
  });

  it('refuses a file over 64 KiB, a directory and non-UTF-8 content without echoing any of it', async () => {
    await write('big', `SECRET${'x'.repeat(FILE_REFERENCE_MAX_BYTES)}`);
    await write('binary', Buffer.from([0x53, 0x45, 0x43, 0xff, 0xfe]));
    await mkdir(join(dir, 'folder'));
    const base = await write('broker.yaml', lines('issuer: https://broker.example', 'dataDir: ${file:big}', 'log: { level: "${file:binary}" }', 'audit: { destination: { file: "${file:folder}" } }'));
    const error = await loadError([base]);
    expect(error.problems).toEqual([
      `${base}:2: dataDir: \${file:big}: ${join(dir, 'big')} is larger than 64 KiB`,
      `${base}:3: log.level: \${file:binary}: ${join(dir, 'binary')} is not UTF-8 text`,
      `${base}:4: audit.destination.file: \${file:folder}: ${join(dir, 'folder')} is not a regular file`,
    ]);
    expect(error.message).not.toContain('SECRET');
  });

  it('refuses a FIFO at once instead of waiting for a writer', async () => {
    execFileSync('mkfifo', [join(dir, 'pipe')]);
    const base = await write('broker.yaml', lines('issuer: https://broker.example', 'dataDir: ${file:pipe}'));
    expect((await loadError([base])).problems).toEqual([`${base}:2: dataDir: \${file:pipe}: ${join(dir, 'pipe')} is not a regular file`]);
  });

  it('keeps $${file:x} literal and never reads a file named by an environment value', async () => {
    const secret = await write('secret', 'do-not-read');
    const { config } = parseConfigText(lines('issuer: https://broker.example', 'dataDir: "$${file:x}-${FROM_ENV}"'), {
      file: 'broker.yaml',
      baseDir: dir,
      env: { FROM_ENV: `\${file:${secret}}` },
    });
    expect(config.dataDir).toBe(`\${file:x}-\${file:${secret}}`);
  });

  it('keeps ${file:-x} meaning variable `file` with a default', () => {
    const text = lines('issuer: https://broker.example', 'dataDir: ${file:-fallback}');
    expect(parseConfigText(text, { file: 'broker.yaml', baseDir: dir, env: {} }).config.dataDir).toBe('fallback');
    expect(parseConfigText(text, { file: 'broker.yaml', baseDir: dir, env: { file: 'set' } }).config.dataDir).toBe('set');
  });

  it('never injects YAML structure from file content', async () => {
    await write('evil', 'x\nissuer: https://evil.example\nbogus: [1]\n');
    const { config } = parseConfigText(lines('issuer: https://broker.example', 'dataDir: ${file:evil}'), { file: 'broker.yaml', baseDir: dir, env: {} });
    expect(config.issuer).toBe('https://broker.example');
    expect(config.dataDir).toBe('x\nissuer: https://evil.example\nbogus: [1]');
  });

  it('records which merged paths came from files, through keyed-list remapping', async () => {
    await write('hash', HASH);
    const base = await write(
      'base.yaml',
      lines('issuer: https://broker.example', 'dataDir: ${file:hash}', 'clients:', '  - { id: a, auth: { method: none } }', '  - { id: b, auth: { method: none } }'),
    );
    const overlay = await write('over.yaml', lines('dataDir: plain', ...secretClient('${file:hash}').map((row) => row.replace('billing', 'b'))));
    const loaded = await loadConfigFiles([base, overlay], {});
    // dataDir from a file was overridden by a plain value; client b (merged index 1) took its hash from a file.
    expect(loaded.substitutedFromFiles).toEqual([['clients', 1, 'auth', 'secretHash']]);
  });
});
