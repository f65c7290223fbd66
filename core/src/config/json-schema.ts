import { z } from 'zod';
import type { PluginDefinition } from '@tessera/plugin-sdk';
import { brokerConfigSchema } from './schema.js';

/** Plugins shipped with Tessera: their config blocks are part of the published JSON Schema. */
export const BUILTIN_PLUGINS = [
  '@tessera/plugin-oidc',
  '@tessera/plugin-access-token',
  '@tessera/plugin-github-actions',
  '@tessera/plugin-spiffe',
  '@tessera/plugin-spire-jwt-svid',
  '@tessera/plugin-kubernetes',
  '@tessera/plugin-aws',
  '@tessera/plugin-gcp',
  '@tessera/plugin-azure',
] as const;

/** Built-in plugins installed beside core; core does not depend on them (plugins are separate packages). */
async function builtinDefinitions(): Promise<{ use: string; definition: PluginDefinition }[]> {
  const found = await Promise.all(
    BUILTIN_PLUGINS.map(async (use) => {
      try {
        return { use, definition: ((await import(use)) as { default: PluginDefinition }).default };
      } catch {
        return undefined;
      }
    }),
  );
  return found.filter((entry) => entry !== undefined);
}

/**
 * JSON Schema (draft 2020-12) of the broker config, generated from the same zod schemas that validate it.
 * Each built-in plugin's entry is typed by its `use` value; other plugins' blocks stay open.
 */
export async function brokerJsonSchema(): Promise<Record<string, unknown>> {
  const schema = z.toJSONSchema(brokerConfigSchema, { io: 'input', target: 'draft-2020-12' }) as Record<string, unknown> & {
    properties: Record<string, { items?: unknown }>;
  };
  const entries = (await builtinDefinitions()).map(({ use, definition }) => ({
    type: 'object',
    description: definition.description,
    properties: {
      use: { const: use },
      config: z.toJSONSchema(definition.config, { io: 'input', target: 'draft-2020-12' }),
    },
    required: ['use'],
    additionalProperties: false,
  }));
  const otherPlugin = {
    type: 'object',
    properties: { use: { type: 'string', not: { enum: [...BUILTIN_PLUGINS] } }, config: {} },
    required: ['use'],
    additionalProperties: false,
  };
  schema.properties.plugins!.items = { anyOf: [...entries, otherPlugin] };
  return {
    $id: 'https://tessera.dev/schema/broker-config.json',
    title: 'Tessera broker configuration',
    ...schema,
  };
}
