import type { RequestListener, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Server as TlsServer } from 'node:tls';
import type { Logger } from '@tessera/plugin-sdk';
import type { BrokerConfig } from '../config/schema.js';
import { createGuardedServer } from '../http/connection-guard.js';
import { trackForDrain, type DrainOutcome } from '../http/drain.js';
import type { ListenerTls } from '../http/tls.js';

export interface RunningServer {
  readonly url: string;
  readonly server: Server;
  /** Graceful close: see `ServerDrain.drain`. */
  drain(timeoutMs: number): Promise<DrainOutcome>;
  /** Immediate close: every connection is destroyed. */
  close(): Promise<void>;
}

/**
 * The broker's listening servers: each sends every request to whichever config serves when it arrives
 * (`listener`), under the connection limits and certificate of the first config (both restart-only).
 */
export class Listeners {
  readonly #servers = new Set<RunningServer>();

  constructor(
    private readonly config: BrokerConfig,
    private readonly listener: RequestListener,
    private readonly log: Logger,
    private readonly tls: ListenerTls | undefined,
  ) {}

  /** Listens on the configured address; PORT overrides the port, `address` overrides both. */
  async listen(address: { host?: string; port?: number } = {}): Promise<RunningServer> {
    const envPort = process.env.PORT ? Number(process.env.PORT) : undefined;
    const port = address.port ?? envPort ?? this.config.listen.port;
    const host = address.host ?? this.config.listen.host;
    const server = createGuardedServer(this.config.limits.connections, this.log, this.listener, this.tls?.serverOptions());
    if (this.tls) this.tls.attach(server as unknown as TlsServer);
    const tracked = trackForDrain(server, this.log);
    await new Promise<void>((done, fail) => {
      server.once('error', fail);
      server.listen(port, host, () => done());
    });
    const bound = server.address() as AddressInfo;
    const running: RunningServer = {
      url: `${this.tls ? 'https' : 'http'}://${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}`,
      server,
      drain: (timeoutMs) => {
        this.#servers.delete(running);
        return tracked.drain(timeoutMs);
      },
      close: () =>
        new Promise<void>((done) => {
          this.#servers.delete(running);
          server.close(() => done());
          server.closeAllConnections();
        }),
    };
    this.#servers.add(running);
    return running;
  }

  /** Drains every server at once: in-flight requests finish, connections close; one summed outcome. */
  async drain(timeoutMs: number): Promise<DrainOutcome> {
    const outcomes = await Promise.all([...this.#servers].map((server) => server.drain(timeoutMs)));
    return outcomes.reduce(
      (total, outcome) => ({
        completed: total.completed + outcome.completed,
        cut: total.cut + outcome.cut,
        timedOut: total.timedOut || outcome.timedOut,
        elapsedMs: Math.max(total.elapsedMs, outcome.elapsedMs),
      }),
      { completed: 0, cut: 0, timedOut: false, elapsedMs: 0 },
    );
  }

  async close(): Promise<void> {
    await Promise.all([...this.#servers].map((server) => server.close()));
  }
}
