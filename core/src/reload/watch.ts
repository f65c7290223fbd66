import { statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { Logger } from '@tessera/plugin-sdk';

export interface ConfigWatch {
  close(): void;
}

export interface ConfigWatchOptions {
  readonly log: Logger;
  /** Read at each change, so a reload can change it. */
  readonly debounceMs: () => number;
}

/**
 * Calls `onChange` once things are quiet after a config file or directory changed. Directories are watched,
 * not files: editors save by writing a new file and renaming it over the old one, and Kubernetes swaps a
 * ConfigMap's `..data` link, so a watch on the file itself would follow the replaced inode and go silent.
 */
export function watchConfigPaths(paths: readonly string[], onChange: () => void, options: ConfigWatchOptions): ConfigWatch {
  // Directory to watch → the names in it that matter (undefined: every config file in it).
  const targets = new Map<string, Set<string> | undefined>();
  for (const path of paths) {
    const absolute = resolve(path);
    let isDirectory = false;
    try {
      isDirectory = statSync(absolute).isDirectory();
    } catch {
      // Loaded a moment ago; if it vanished since, its directory is still the place to watch.
    }
    if (isDirectory) targets.set(absolute, undefined);
    else if (!targets.has(dirname(absolute)) || targets.get(dirname(absolute)) !== undefined) {
      const names = targets.get(dirname(absolute)) ?? new Set<string>();
      names.add(basename(absolute));
      targets.set(dirname(absolute), names);
    }
  }

  let timer: NodeJS.Timeout | undefined;
  const changed = () => {
    clearTimeout(timer);
    timer = setTimeout(onChange, options.debounceMs());
  };
  const watchers: FSWatcher[] = [];
  for (const [dir, names] of targets) {
    try {
      const watcher = watch(dir, { persistent: false }, (_event, filename) => {
        const name = filename?.toString();
        // No name (some platforms), the file itself, or a ConfigMap's `..data` swap; other hidden files are editor swap files.
        if (name === undefined || (names ? names.has(name) : !name.startsWith('.')) || name.startsWith('..')) changed();
      });
      watcher.on('error', (error) => options.log.warn({ dir, err: error.message }, 'reload: config watch failed; SIGHUP still reloads'));
      watchers.push(watcher);
    } catch (error) {
      options.log.warn({ dir, err: error instanceof Error ? error.message : String(error) }, 'reload: cannot watch the config directory; SIGHUP still reloads');
    }
  }
  options.log.info({ dirs: [...targets.keys()] }, 'reload: watching the config files');
  return {
    close() {
      clearTimeout(timer);
      for (const watcher of watchers) watcher.close();
    },
  };
}
