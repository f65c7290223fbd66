import type { ConfigPath } from './errors.js';

/**
 * Lists whose entries are identified by a key: a later file's entry with a known key replaces that entry
 * in place, so an overlay can change one client or rule without restating the others.
 */
export const KEYED_LISTS: readonly { readonly path: readonly string[]; readonly key: string }[] = [
  { path: ['clients'], key: 'id' },
  { path: ['plugins'], key: 'use' },
  { path: ['policy', 'rules'], key: 'id' },
];

/** One parsed config file; `source` is whatever the caller needs to locate a path inside it. */
export interface ConfigLayer<S> {
  readonly value: unknown;
  readonly source: S;
}

export interface Origin<S> {
  readonly source: S;
  /** Path of the value inside that source (keyed-list indexes are the source's own). */
  readonly path: ConfigPath;
}

export interface MergedConfig<S> {
  readonly value: unknown;
  /** The layer that supplied the value at a merged path. Paths below a merged node fall back to its nearest ancestor's layer. */
  originOf(path: ConfigPath): Origin<S>;
}

/** A merged node remembers its own origin; `children` exist only where two layers were combined. */
interface OriginTree<S> extends Origin<S> {
  readonly children?: ReadonlyMap<PropertyKey, OriginTree<S>>;
}

interface Tracked<S> {
  readonly value: unknown;
  readonly tree: OriginTree<S>;
}

/** A plain object (a YAML mapping); class instances such as Date are treated as scalars. */
export function isMapping(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/**
 * Merges parsed config files in order: mappings key by key, keyed lists by entry key (see `KEYED_LISTS`),
 * anything else replaced by the later layer. An empty file contributes nothing.
 */
export function mergeLayers<S>(layers: readonly [ConfigLayer<S>, ...ConfigLayer<S>[]]): MergedConfig<S> {
  const tracked = layers.map((layer): Tracked<S> => ({ value: layer.value ?? {}, tree: { source: layer.source, path: [] } }));
  const merged = tracked.slice(1).reduce((base, over) => mergeTracked(base, over, []), tracked[0]!);
  return {
    value: merged.value,
    originOf(path) {
      let node = merged.tree;
      let depth = 0;
      for (; depth < path.length; depth++) {
        const child = node.children?.get(path[depth]!);
        if (!child) break;
        node = child;
      }
      return { source: node.source, path: [...node.path, ...path.slice(depth)] };
    },
  };
}

function childOf<S>(parent: Tracked<S>, key: PropertyKey, value: unknown): Tracked<S> {
  return { value, tree: parent.tree.children?.get(key) ?? { source: parent.tree.source, path: [...parent.tree.path, key] } };
}

function mergeTracked<S>(base: Tracked<S>, over: Tracked<S>, path: readonly PropertyKey[]): Tracked<S> {
  const keyed = KEYED_LISTS.find((list) => list.path.length === path.length && list.path.every((key, index) => key === path[index]));
  if (keyed && Array.isArray(base.value) && Array.isArray(over.value)) return mergeKeyedList(base, over, keyed.key);
  if (!isMapping(base.value) || !isMapping(over.value)) return over;
  const entries = new Map<string, Tracked<S>>(Object.entries(base.value).map(([key, value]) => [key, childOf(base, key, value)]));
  for (const [key, value] of Object.entries(over.value)) {
    const earlier = entries.get(key);
    const later = childOf(over, key, value);
    entries.set(key, earlier ? mergeTracked(earlier, later, [...path, key]) : later);
  }
  return {
    // fromEntries, not assignment: a `__proto__` key stays a plain key.
    value: Object.fromEntries([...entries].map(([key, entry]) => [key, entry.value])),
    tree: { ...base.tree, children: new Map([...entries].map(([key, entry]) => [key, entry.tree])) },
  };
}

function mergeKeyedList<S>(base: Tracked<S>, over: Tracked<S>, key: string): Tracked<S> {
  const baseItems = base.value as readonly unknown[];
  const items = baseItems.map((value, index) => childOf(base, index, value));
  const indexOfKey = new Map<unknown, number>();
  baseItems.forEach((entry, index) => {
    const id = keyOf(entry, key);
    if (id !== undefined && !indexOfKey.has(id)) indexOfKey.set(id, index);
  });
  const replaced = new Set<string>();
  (over.value as readonly unknown[]).forEach((entry, index) => {
    const id = keyOf(entry, key);
    const target = id === undefined ? undefined : indexOfKey.get(id);
    // A key repeated within one layer is appended, so validation still reports it as listed twice.
    if (id !== undefined && target !== undefined && !replaced.has(id)) {
      items[target] = childOf(over, index, entry);
      replaced.add(id);
    } else {
      items.push(childOf(over, index, entry));
    }
  });
  return {
    value: items.map((item) => item.value),
    tree: { ...base.tree, children: new Map(items.map((item, index) => [index, item.tree])) },
  };
}

function keyOf(entry: unknown, key: string): string | undefined {
  const id = isMapping(entry) ? entry[key] : undefined;
  return typeof id === 'string' ? id : undefined;
}
