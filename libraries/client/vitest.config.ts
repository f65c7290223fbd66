import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // The cloud SDKs probe their metadata endpoints with their own timeouts and retries (google-auth-library
    // takes about 1 s on an idle machine); a loaded 2-core CI machine running other packages' tests needs the slack.
    testTimeout: 20_000,
  },
});
