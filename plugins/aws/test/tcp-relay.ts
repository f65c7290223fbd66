import { connect, createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A loopback TCP relay in front of moto. Bytes pass through untouched (so the `Host` the workload signed
 * reaches moto as signed); `stall()` makes new connections hang, like an STS that accepts and never answers.
 */
export class TcpRelay {
  #stalled = false;
  readonly #sockets = new Set<Socket>();

  private constructor(
    private readonly server: ReturnType<typeof createServer>,
    readonly url: string,
  ) {}

  static async start(target: string): Promise<TcpRelay> {
    const { hostname, port } = new URL(target);
    let relay: TcpRelay | undefined;
    const server = createServer((client) => {
      const sockets = relay!.#sockets;
      sockets.add(client);
      client.once('close', () => sockets.delete(client));
      client.on('error', () => client.destroy());
      if (relay!.#stalled) return;
      const upstream = connect(Number(port), hostname);
      sockets.add(upstream);
      upstream.once('close', () => sockets.delete(upstream));
      upstream.on('error', () => client.destroy());
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    relay = new TcpRelay(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return relay;
  }

  /** Hang new connections; the returned undo drops the hung ones and relays again. */
  stall(): () => void {
    this.#stalled = true;
    return () => {
      this.#stalled = false;
      for (const socket of this.#sockets) socket.destroy();
    };
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
