/**
 * What the bench measures: a system (a server process of its own) offering scenarios (one request shape
 * each). Tessera, the Koa reference and every peer describe themselves this way, so one loop measures
 * them all in interleaved rounds with the same load generator.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';

/** One request shape: POSTs of pre-generated bodies to one URL. */
export interface BenchScenario {
  /** Row name in the table, e.g. `keycloak: client_credentials`. */
  readonly name: string;
  readonly url: string;
  /** Request headers besides content-length (content-type at least). */
  readonly headers: Readonly<Record<string, string>>;
  /**
   * `count` bodies, each usable once (single-use client assertions are fresh in each), made before any
   * timing starts so the load generator does no crypto.
   */
  bodies(count: number): Promise<string[]>;
  /** Which Tessera row a peer's row is compared with. */
  readonly comparable?: 'client_credentials' | 'token_exchange';
  /** Extra warm-up seconds before the first round (a JVM's JIT needs longer than Node's). */
  readonly warmupSeconds?: number;
}

/** A running server: its process (sampled for RSS and CPU) and what it can be asked. */
export interface BenchSystem {
  readonly name: string;
  /** e.g. `oidc-provider 9.13.3`, `Keycloak 26.4.7 on Temurin 25`. */
  readonly version: string;
  /** The server's process id, for RSS and CPU sampling. */
  readonly pid: number;
  readonly scenarios: readonly BenchScenario[];
  stop(): Promise<void>;
}

/** A peer that could not run says exactly why; the result file records it. */
export interface Unavailable {
  readonly unavailable: string;
}

export interface StartOptions {
  /** The CPU core the server is pinned to (`taskset -c`), when pinning is possible. */
  readonly cpu: number | undefined;
  /** A scratch directory of the system's own. */
  readonly workDir: string;
  /** Progress lines for the operator (stderr). */
  readonly log: (line: string) => void;
}

export type StartSystem = (options: StartOptions) => Promise<BenchSystem | Unavailable>;

export function isUnavailable(value: BenchSystem | Unavailable): value is Unavailable {
  return 'unavailable' in value;
}

const TASKSET = '/usr/bin/taskset';

/** Pinning needs taskset and a core to spare for the load generator. */
export function canPin(cores: number): boolean {
  return cores >= 2 && existsSync(TASKSET);
}

/** `command args` on core `cpu` (via taskset) when one is given; plain otherwise. */
export function spawnPinned(cpu: number | undefined, command: string, args: readonly string[], options: SpawnOptions): ChildProcess {
  return cpu === undefined ? spawn(command, args, options) : spawn(TASKSET, ['-c', String(cpu), command, ...args], options);
}
