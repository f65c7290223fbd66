import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // test/examples/* are workspace packages with their own test runs.
    exclude: [...configDefaults.exclude, 'examples/**'],
    // Several files spawn the CLI or start brokers; on a loaded 2-core CI machine 5 s is too tight.
    testTimeout: 20_000,
    hookTimeout: 60_000,
  },
});
