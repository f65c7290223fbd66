import { Document } from 'yaml';
import { resolvePlugins } from '../plugins/loader.js';
import type { LoadedConfig } from './load.js';
import { isMapping } from './merge.js';
import { redactPaths, redactSecrets } from './redact.js';
import { brokerConfigSchema } from './schema.js';

/**
 * The config `tessera config print` shows: as written (merged and substituted) or, with `resolved`, with
 * every default applied, plugin blocks included. Plugins are resolved either way, since their schemas
 * say which of their fields are secret. Secrets (schema-marked, and values from `${file:}`) are redacted.
 */
export async function printableConfig(loaded: LoadedConfig, options: { resolved: boolean }): Promise<Record<string, unknown>> {
  const plugins = await resolvePlugins(loaded.config.plugins, loaded.baseDir, loaded.locate);
  const shown = options.resolved
    ? { ...loaded.config, plugins: loaded.config.plugins.map((entry, index) => ({ ...entry, config: plugins[index]!.config })) }
    : loaded.written;
  const redacted = redactSecrets(shown, brokerConfigSchema) as Record<string, unknown>;
  // The broker schema leaves plugin blocks open; each plugin's own schema marks its secrets.
  if (Array.isArray(redacted.plugins)) {
    redacted.plugins = redacted.plugins.map((entry: unknown, index) => {
      const plugin = plugins[index];
      return plugin && isMapping(entry) && entry.config !== undefined ? { ...entry, config: redactSecrets(entry.config, plugin.definition.config) } : entry;
    });
  }
  return redactPaths(redacted, loaded.substitutedFromFiles) as Record<string, unknown>;
}

/** `printableConfig` as YAML, headed by a comment naming the files merged. */
export async function renderConfig(loaded: LoadedConfig, options: { resolved: boolean }): Promise<string> {
  const document = new Document(await printableConfig(loaded, options));
  document.commentBefore = ` ${options.resolved ? 'Resolved' : 'Merged'} from ${loaded.files.join(', ')}; secrets redacted`;
  return document.toString({ lineWidth: 0 });
}
