import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { freePort } from '../src/free-port.js';

export { freePort };

export const CLI = resolve(import.meta.dirname, '../../core/dist/cli/main.js');

/** Resolves when `check` holds, polled every 10 ms; rejects after `timeoutMs` naming what it waited for. */
export async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 10));
  }
}

export interface LogLine {
  readonly msg?: string;
  readonly level?: number;
  readonly [key: string]: unknown;
}

const running = new Set<Serve>();

/** SIGKILLs every `tessera serve` still running; call it from `afterEach`. */
export function killServes(): void {
  for (const serve of running) if (serve.exit === undefined) serve.child.kill('SIGKILL');
  running.clear();
}

/** One `tessera serve` process, its stderr log parsed as it arrives. */
export class Serve {
  readonly logs: LogLine[] = [];
  stderr = '';
  exit: { code: number | null; signal: NodeJS.Signals | null; at: number } | undefined;
  readonly exited: Promise<void>;

  constructor(
    readonly child: ChildProcess,
    readonly port: number,
  ) {
    let partial = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk;
      const lines = (partial + chunk).split('\n');
      partial = lines.pop()!;
      for (const line of lines) if (line.startsWith('{')) this.logs.push(JSON.parse(line) as LogLine);
    });
    child.stdout!.resume();
    this.exited = new Promise((done) =>
      child.once('exit', (code, signal) => {
        this.exit = { code, signal, at: Date.now() };
        done();
      }),
    );
  }

  static async start(configPath: string, port: number): Promise<Serve> {
    const child = spawn(process.execPath, [CLI, 'serve', '--config', configPath], { env: { ...process.env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'] });
    const serve = new Serve(child, port);
    running.add(serve);
    await until('the listening line', () => serve.stderr.includes('tessera listening on') || serve.exit !== undefined, 30_000);
    if (serve.exit) throw new Error(`tessera serve exited ${serve.exit.code}: ${serve.stderr}`);
    return serve;
  }

  logged(message: string): LogLine | undefined {
    return this.logs.find((line) => line.msg?.startsWith(message));
  }

  async waitForLog(message: string): Promise<LogLine> {
    await until(`log "${message}"`, () => this.logged(message) !== undefined);
    return this.logged(message)!;
  }
}
