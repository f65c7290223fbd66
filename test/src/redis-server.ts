import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './free-port.js';

export { freePort };

/** Why Redis tests cannot run here, or undefined when they can. */
export function redisUnavailableReason(): string | undefined {
  const probe = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  return probe.status === 0 ? undefined : 'redis-server is not installed (Debian package redis-server; .ci/run installs it)';
}

/** CI sets TESSERA_REQUIRE_REDIS=1 so that a missing redis-server fails the run instead of skipping silently. */
export function redisRequired(): boolean {
  return process.env.TESSERA_REQUIRE_REDIS === '1';
}

/** For `beforeEach`/`beforeAll`: throws when Redis is required but absent, answers whether to skip otherwise. */
export function redisSkipReason(): string | undefined {
  const unavailable = redisUnavailableReason();
  if (unavailable && redisRequired()) throw new Error(`TESSERA_REQUIRE_REDIS=1 but ${unavailable}`);
  return unavailable;
}


export interface RedisServerOptions {
  /** Append-only file in the data directory, so the data survives a Redis restart. */
  readonly persistent?: boolean;
  /** `requirepass`: clients must AUTH. */
  readonly password?: string;
  /** Serve TLS only (no plaintext port), with this PEM certificate and key. */
  readonly tls?: { readonly certPem: string; readonly keyPem: string };
  /** `--maxmemory-policy` (Redis defaults to noeviction), e.g. `volatile-lru` as some managed Redis set it. */
  readonly maxmemoryPolicy?: string;
}

/** A real `redis-server` on a loopback port, in a directory of its own. */
export class RedisServer {
  #child: ChildProcess | undefined;

  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly options: RedisServerOptions,
  ) {}

  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-redis-'));
    if (options.tls) {
      await writeFile(join(dir, 'server.pem'), options.tls.certPem);
      await writeFile(join(dir, 'server.key'), options.tls.keyPem, { mode: 0o600 });
    }
    const server = new RedisServer(await freePort(), dir, options);
    await server.restart();
    return server;
  }

  get url(): string {
    return `${this.options.tls ? 'rediss' : 'redis'}://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Starts it (again, on the same port and directory). */
  async restart(): Promise<void> {
    const persistence = this.options.persistent ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
    const listen = this.options.tls
      ? ['--port', '0', '--tls-port', String(this.port), '--tls-cert-file', join(this.dir, 'server.pem'), '--tls-key-file', join(this.dir, 'server.key'), '--tls-auth-clients', 'no']
      : ['--port', String(this.port)];
    const auth = this.options.password ? ['--requirepass', this.options.password] : [];
    const eviction = this.options.maxmemoryPolicy ? ['--maxmemory-policy', this.options.maxmemoryPolicy] : [];
    const child = spawn('redis-server', [...listen, ...auth, ...eviction, '--bind', '127.0.0.1', '--save', '', ...persistence, '--dir', this.dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    let output = '';
    await new Promise<void>((done, fail) => {
      const timer = setTimeout(() => fail(new Error(`redis-server did not start: ${output}`)), 10_000);
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        output += chunk;
        if (output.includes('Ready to accept connections')) {
          clearTimeout(timer);
          done();
        }
      });
      child.stderr!.resume();
      child.once('exit', (code) => {
        clearTimeout(timer);
        fail(new Error(`redis-server exited ${code}: ${output}`));
      });
    });
    child.stdout!.resume();
  }

  /** Stops it and waits until the port is closed. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((done) => child.once('exit', () => done()));
    child.kill('SIGCONT');
    child.kill('SIGTERM');
    await exited;
    this.#child = undefined;
  }

  /** Freezes the process (SIGSTOP): connections stay open, nothing answers. */
  pause(): void {
    this.#child?.kill('SIGSTOP');
  }

  resume(): void {
    this.#child?.kill('SIGCONT');
  }
}
