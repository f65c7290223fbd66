import { z } from 'zod';
import type { ConfigPath } from './errors.js';
import { isMapping } from './merge.js';

export const REDACTED = '<redacted>';

type Schema = z.core.$ZodType;

/** True when a schema, or a wrapper around it, carries `.meta({ secret: true })`. */
function isSecret(schema: Schema): boolean {
  return z.globalRegistry.get(schema)?.secret === true;
}

/**
 * Replaces every value whose schema is marked `.meta({ secret: true })` with `<redacted>`. Walks the value
 * alongside the schema, so it works on a config as written (input) and as parsed (output). A union
 * redacts a key if any branch marks it secret: which branch matched is not known here, and guessing wrong
 * would print the secret. Returns a copy; null and absent values are left as they are.
 */
export function redactSecrets(value: unknown, schema: Schema): unknown {
  if (value === undefined || value === null) return value;
  if (isSecret(schema)) return REDACTED;
  const def = (schema as z.core.$ZodTypes)._zod.def;
  switch (def.type) {
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'catch':
    case 'nonoptional':
    case 'readonly':
    case 'success':
    case 'promise':
      return redactSecrets(value, def.innerType);
    case 'lazy':
      return redactSecrets(value, def.getter());
    case 'pipe':
      return redactSecrets(redactSecrets(value, def.in), def.out);
    case 'intersection':
      return redactSecrets(redactSecrets(value, def.left), def.right);
    case 'union':
      return def.options.reduce<unknown>((redacted, option) => redactSecrets(redacted, option), value);
    case 'object': {
      if (!isMapping(value)) return value;
      const shape = def.shape;
      return Object.fromEntries(
        Object.entries(value).map(([key, item]) => {
          const itemSchema = Object.hasOwn(shape, key) ? shape[key] : def.catchall;
          return [key, itemSchema ? redactSecrets(item, itemSchema) : item];
        }),
      );
    }
    case 'record':
      return isMapping(value) ? Object.fromEntries(Object.entries(value).map(([key, item]) => [key, redactSecrets(item, def.valueType)])) : value;
    case 'array':
      return Array.isArray(value) ? value.map((item) => redactSecrets(item, def.element)) : value;
    case 'tuple':
      if (!Array.isArray(value)) return value;
      return value.map((item, index) => {
        const itemSchema = def.items[index] ?? def.rest;
        return itemSchema ? redactSecrets(item, itemSchema) : item;
      });
    default:
      return value;
  }
}

/** Replaces the value at each path that exists in `value` with `<redacted>`. Returns a copy. */
export function redactPaths(value: unknown, paths: readonly ConfigPath[]): unknown {
  return paths.reduce<unknown>((redacted, path) => replaceAt(redacted, path), value);
}

function replaceAt(value: unknown, path: ConfigPath): unknown {
  if (path.length === 0) return value === undefined ? value : REDACTED;
  const [key, ...rest] = path;
  if (Array.isArray(value) && typeof key === 'number' && key < value.length) {
    return value.map((item, index) => (index === key ? replaceAt(item, rest) : item));
  }
  if (isMapping(value) && typeof key === 'string' && Object.hasOwn(value, key)) {
    return Object.fromEntries(Object.entries(value).map(([name, item]) => [name, name === key ? replaceAt(item, rest) : item]));
  }
  return value;
}
