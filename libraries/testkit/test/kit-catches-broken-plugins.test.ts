import { execFile } from 'node:child_process';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

// vitest's CLI entry, next to its package.json (the bin is not an export).
const VITEST_BIN = fileURLToPath(new URL('./vitest.mjs', import.meta.resolve('vitest/package.json')));

interface JsonReport {
  testResults: { assertionResults: { fullName: string; status: string }[] }[];
}

/** The kit is only worth running if it fails plugins that are wrong: run it on three broken ones. */
it('fails a validator that verifies nothing, one that throws raw errors, and one whose errors quote the token', async () => {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const output = join(await mkdtemp(join(tmpdir(), 'tessera-kit-')), 'report.json');
  const run = promisify(execFile)(process.execPath, [VITEST_BIN, 'run', '--config', 'test/broken/vitest.config.ts', '--reporter=json', `--outputFile=${output}`], { cwd: root });
  expect(await run.then(() => 0, (error: { code: number }) => error.code)).toBe(1);
  const report = JSON.parse(await readFile(output, 'utf8')) as JsonReport;
  const status = Object.fromEntries(report.testResults.flatMap((file) => file.assertionResults.map((test) => [test.fullName, test.status])));
  const of = (plugin: string, test: string) => status[`validator contract: ${plugin} ${test}`];

  expect(of('lenient', 'accepts a valid token and normalizes it into a JSON-safe identity')).toBe('passed');
  expect(of('lenient', 'refuses an expired token')).toBe('failed');
  expect(of('lenient', 'refuses a token whose audience does not name the broker')).toBe('failed');
  expect(of('lenient', 'refuses a token whose signature was tampered with')).toBe('failed');
  expect(of('lenient', 'refuses a token from an issuer it does not trust')).toBe('failed');
  expect(of('lenient', 'refuses a JWT re-signed with a key the issuer never published (unknown kid)')).toBe('failed');
  expect(of('lenient', "refuses algorithm confusion: HS256 keyed with the issuer's public key")).toBe('failed');

  expect(of('leaky', 'accepts a valid token and normalizes it into a JSON-safe identity')).toBe('passed');
  for (const test of ['refuses an expired token', 'refuses a token whose signature was tampered with', 'refuses garbage with InvalidToken, never a raw exception or a 5xx']) {
    expect(of('leaky', test), test).toBe('failed');
  }

  // Right error class, right status: only the leak check can catch this one.
  expect(of('chatty', 'accepts a valid token and normalizes it into a JSON-safe identity')).toBe('passed');
  for (const test of ['refuses an expired token', 'refuses a token whose signature was tampered with', 'refuses a token from an issuer it does not trust']) {
    expect(of('chatty', test), test).toBe('failed');
  }
}, 60_000);
