import type { Logger, Metrics } from '@tessera/plugin-sdk';
import { ConfigError, type Locator } from '../config/errors.js';
import type { BrokerConfig } from '../config/schema.js';
import type { KeyPlan, KeyStatus, RotatingKeyRing } from '../keys/key-rotation.js';
import { restartOnlyChanges } from './config-diff.js';
import type { Generation, GenerationSwitch } from './generations.js';

export type ReloadOutcome =
  | {
      readonly status: 'applied';
      readonly generation: number;
      readonly digest: string;
      readonly previousDigest: string;
      readonly keys: KeyStatus;
    }
  | {
      readonly status: 'rejected';
      /** Why, one problem a line (`file:line: path: message` for config problems). */
      readonly problems: readonly string[];
      /** Digest of the config that was rejected, when it parsed. */
      readonly digest?: string;
      /** Digest of the config that keeps serving. */
      readonly runningDigest: string;
    };

/** A generation as reload needs it: built from one config, with the key schedule that config gives. */
export interface ConfigGeneration extends Generation {
  readonly config: BrokerConfig;
  readonly digest: string;
  readonly keyPlan: KeyPlan;
}

export interface ConfigSource {
  readonly config: BrokerConfig;
  readonly baseDir: string;
  readonly locate?: Locator;
}

export interface ReloaderDeps<G extends ConfigGeneration> {
  readonly generations: GenerationSwitch<G>;
  readonly keyRing: RotatingKeyRing;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** Reads the config files again; without it, only `reload(config)` can reload. */
  readonly read?: () => Promise<ConfigSource>;
  /** Builds a whole generation (plugins started, keys loaded, every eager check run) without serving it. */
  readonly build: (source: ConfigSource, id: number) => Promise<G>;
  /** False once the broker drains or closes. */
  readonly accepting: () => boolean;
  /** Where an explicitly given config's relative paths resolve. */
  readonly baseDir: string;
  readonly locate?: Locator;
}

/**
 * Reload: read the config again, build a whole new generation next to the serving one, and only then swap
 * the two (with the key schedule) in one synchronous step. Any failure leaves the serving generation as it
 * was. Reloads run one at a time; requests that arrive while one runs share the next.
 */
export class Reloader<G extends ConfigGeneration> {
  #running: Promise<unknown> = Promise.resolve();
  #queued: Promise<ReloadOutcome> | undefined;
  #nextId: number;
  readonly #count;

  constructor(private readonly deps: ReloaderDeps<G>) {
    this.#nextId = deps.generations.current.id + 1;
    this.#count = deps.metrics.counter('tessera_config_reloads_total', 'Config reloads by outcome', ['outcome']);
  }

  reload(config?: BrokerConfig): Promise<ReloadOutcome> {
    // An explicit config is never merged into another request: it is what the caller asked for.
    if (config === undefined && this.#queued) return this.#queued;
    const outcome = this.#running.then(() => {
      if (config === undefined) this.#queued = undefined;
      return this.#reload(config);
    });
    if (config === undefined) this.#queued = outcome;
    // A reload that threw must not stop the ones queued behind it.
    this.#running = outcome.catch(() => undefined);
    return outcome;
  }

  /** Resolves once no reload is running. */
  async idle(): Promise<void> {
    await this.#running;
  }

  async #reload(explicit?: BrokerConfig): Promise<ReloadOutcome> {
    const { generations, log } = this.deps;
    const running = generations.current;
    const reject = (problems: readonly string[], digest?: string): ReloadOutcome => {
      log.error({ problems, ...(digest ? { digest } : {}), runningDigest: running.digest, generation: running.id }, 'reload rejected: the running config keeps serving');
      this.#count.inc({ outcome: 'rejected' });
      return { status: 'rejected', problems, ...(digest ? { digest } : {}), runningDigest: running.digest };
    };
    if (!this.deps.accepting()) return reject(['the broker is shutting down']);

    let source: ConfigSource;
    try {
      if (explicit) source = { config: explicit, baseDir: this.deps.baseDir, ...(this.deps.locate ? { locate: this.deps.locate } : {}) };
      else if (this.deps.read) source = await this.deps.read();
      else return reject(['no config files to read again (the broker was created from a config object)']);
    } catch (error) {
      return reject(problemsOf(error));
    }

    const restartOnly = restartOnlyChanges(running.config, source.config);
    if (restartOnly.length > 0) {
      // Applying the rest would leave a process that no config file describes.
      return reject(restartOnly.map((path) => `${path}: changed, which needs a restart; nothing was applied`));
    }

    let next: G;
    try {
      next = await this.deps.build(source, this.#nextId);
    } catch (error) {
      return reject(problemsOf(error));
    }
    // Shutdown may have begun while the generation was built: it would never serve.
    if (!this.deps.accepting()) {
      await next.close().catch(() => undefined);
      return reject(['the broker is shutting down']);
    }
    // Keys first: the key ring checks the plan again against the tokens signed while the generation was
    // built, and throws before changing anything; the swap follows in the same synchronous step.
    try {
      this.deps.keyRing.commit(next.keyPlan);
    } catch (error) {
      await next.close().catch(() => undefined);
      return reject(problemsOf(error), next.digest);
    }
    this.#nextId += 1;
    generations.swap(next);
    const keys = this.deps.keyRing.status();
    log.info(
      {
        generation: next.id,
        digest: next.digest,
        previousDigest: running.digest,
        changed: next.digest !== running.digest,
        signingKid: keys.signing,
        ...(keys.next ? { nextKid: keys.next.kid, nextSignsFrom: keys.next.signsFrom.toISOString() } : {}),
        publishedKids: keys.published,
      },
      'reload applied',
    );
    this.#count.inc({ outcome: 'applied' });
    return { status: 'applied', generation: next.id, digest: next.digest, previousDigest: running.digest, keys };
  }
}

function problemsOf(error: unknown): string[] {
  if (error instanceof ConfigError) return [...error.problems];
  return [error instanceof Error ? error.message : String(error)];
}
