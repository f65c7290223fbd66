import { configDefaults, defineConfig } from 'vitest/config';

// test/examples/* are workspace packages with their own test runs.
export default defineConfig({ test: { exclude: [...configDefaults.exclude, 'examples/**'] } });
