import { configDefaults, defineConfig } from 'vitest/config';

/**
 * Tests that npm-install packed tarballs. Beside the broker tests on a 2-core machine they ran ten times
 * slower (npm is CPU-bound and shares the cores with load tests), so they are a stage of their own that
 * `npm test` runs after the rest: TESSERA_TEST_STAGE=installs.
 */
const INSTALL_TESTS = ['e2e/packaging.test.ts', 'e2e/bundle.test.ts'];
const installStage = process.env.TESSERA_TEST_STAGE === 'installs';

export default defineConfig({
  test: {
    ...(installStage ? { include: INSTALL_TESTS } : {}),
    // test/examples/* are workspace packages with their own test runs.
    exclude: [...configDefaults.exclude, 'examples/**', ...(installStage ? [] : INSTALL_TESTS)],
    // Several files spawn the CLI or start brokers; on a loaded 2-core CI machine 5 s is too tight.
    testTimeout: 20_000,
    hookTimeout: 60_000,
  },
});
