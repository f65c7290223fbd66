import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Each file starts its own moto server and brokers; a loaded 2-core CI machine needs the slack.
    testTimeout: 20_000,
    hookTimeout: 60_000,
  },
});
