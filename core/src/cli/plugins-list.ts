import type { LoadedPlugin } from '../plugins/loader.js';

export interface PluginSummary {
  readonly name: string;
  readonly version: string;
  readonly use: string;
  readonly apiVersion: string;
  readonly validates: readonly string[];
  readonly issues: readonly string[];
  /** Token types whose identities its attribute extractors enrich; `*` for every type. */
  readonly extractsFor: readonly string[];
}

/** What each loaded plugin provides, in config order. */
export function summarizePlugins(plugins: readonly LoadedPlugin[]): PluginSummary[] {
  return plugins.map((plugin) => ({
    name: plugin.name,
    version: plugin.version,
    use: plugin.use,
    apiVersion: plugin.apiVersion,
    validates: (plugin.provides.validators ?? []).flatMap((validator) => validator.tokenTypes),
    issues: (plugin.provides.issuers ?? []).flatMap((issuer) => issuer.tokenTypes),
    extractsFor: (plugin.provides.attributeExtractors ?? []).flatMap((extractor): readonly string[] => extractor.tokenTypes ?? ['*']),
  }));
}

export function formatPluginSummaries(summaries: readonly PluginSummary[]): string {
  if (summaries.length === 0) return 'no plugins configured\n';
  const lines: string[] = [];
  for (const plugin of summaries) {
    lines.push(`${plugin.name} ${plugin.version} (${plugin.use}) API ${plugin.apiVersion}`);
    for (const type of plugin.validates) lines.push(`  validates ${type}`);
    for (const type of plugin.issues) lines.push(`  issues ${type}`);
    for (const type of plugin.extractsFor) lines.push(`  adds attributes for ${type}`);
  }
  return `${lines.join('\n')}\n`;
}
