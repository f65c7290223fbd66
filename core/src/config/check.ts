import { silentLogger } from '../logging.js';
import { brokerInfoFor } from '../broker.js';
import { systemClock } from '../clock.js';
import { GuardedFetcher } from '../http/fetcher.js';
import { loadKeyRing } from '../keys/key-ring.js';
import { RemoteJwksCache } from '../keys/remote-jwks.js';
import { ClientAuthenticator } from '../oauth/client-auth.js';
import { InMemoryReplayStore } from '../oauth/replay-store.js';
import { resolvePlugins } from '../plugins/loader.js';
import { PolicyEngine } from '../policy/policy-engine.js';
import { checkAdminClients } from '../state/kill-switch-admin.js';
import { ConfigError } from './errors.js';
import type { LoadedConfig } from './load.js';

/**
 * Everything `createBroker` would refuse that can be known without starting anything: plugin resolution
 * and plugin config blocks, client credentials (hashes, inline JWKS), rule defaults, key files. Plugin
 * `init` (which may do I/O) is not run, so token-type collisions surface only at startup.
 */
export async function checkConfig(loaded: LoadedConfig): Promise<void> {
  const { config, baseDir, locate } = loaded;
  const problems: string[] = [];
  const collect = async (check: () => unknown): Promise<void> => {
    try {
      await check();
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      problems.push(...error.problems);
    }
  };
  await collect(() => resolvePlugins(config.plugins, baseDir, locate));
  await collect(() => new PolicyEngine(config.policy.rules, { brokerIssuer: config.issuer, conditionTimeoutMs: config.limits.conditionTimeoutMs }));
  await collect(() => {
    const fetcher = new GuardedFetcher(config.network);
    const info = brokerInfoFor(config.issuer);
    const authenticator = new ClientAuthenticator(config.clients, config.clientAuth, {
      jwks: new RemoteJwksCache(fetcher, systemClock, silentLogger),
      replay: new InMemoryReplayStore(systemClock),
      clock: systemClock,
      broker: { issuer: info.issuer, tokenEndpoint: info.tokenEndpoint },
    });
    checkAdminClients(config, authenticator);
  });
  // A generated development key is created at startup; only configured key files are read here.
  if (config.keys.files.length > 0 || !config.keys.generate) {
    await collect(() => loadKeyRing({ ...config.keys, generate: false }, { baseDir, dataDir: config.dataDir, log: silentLogger }));
  }
  if (problems.length > 0) throw new ConfigError(problems);
}
