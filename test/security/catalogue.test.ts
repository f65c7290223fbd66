import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');

/** SECURITY.md names a test for every catalogue entry: each named file must exist, so the catalogue cannot rot. */
it('every test SECURITY.md names exists', () => {
  const text = readFileSync(resolve(ROOT, 'SECURITY.md'), 'utf8');
  const named = [...new Set([...text.matchAll(/`([\w./-]+\.test\.ts)`/g)].map((match) => match[1]!))];
  expect(named.length).toBeGreaterThan(20);
  expect(named.filter((path) => !existsSync(resolve(ROOT, path)))).toEqual([]);
});
