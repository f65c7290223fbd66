import type { Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '@tessera/plugin-sdk';

/** What `/readyz` reports: ready once keys are loaded and plugins started, until a drain begins. */
export type Readiness = 'starting' | 'ready' | 'draining';

export interface DrainOutcome {
  /** Requests answered after the drain began: those in flight then, and any that arrived on open connections. */
  readonly completed: number;
  /** Requests still unanswered at the deadline, cut with their connections. */
  readonly cut: number;
  /** The deadline passed with connections still open (they were destroyed). */
  readonly timedOut: boolean;
  readonly elapsedMs: number;
}

export interface ServerDrain {
  /**
   * Stops accepting connections, closes idle ones at once and each busy one after its response, and waits
   * for the last to close. At `timeoutMs` the connections left are destroyed and counted as cut.
   */
  drain(timeoutMs: number): Promise<DrainOutcome>;
}

/**
 * Tracks a server's connections and responses from the start, so a drain knows what is in flight. Node's
 * `server.close()` alone closes only the connections idle at that moment: a busy keep-alive connection
 * would be kept open after its response until `keepAliveTimeout`, and its client would send the next
 * request into a closing socket. During a drain every response says `Connection: close` instead.
 */
export function trackForDrain(server: Server, log: Logger): ServerDrain {
  const sockets = new Set<Socket>();
  const responses = new Set<ServerResponse>();
  let draining = false;
  let completed = 0;
  let settle = () => {};

  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => {
      sockets.delete(socket);
      settle();
    });
  });
  // Ahead of the app: the header must be set before the app can write its response.
  server.prependListener('request', (_req, res: ServerResponse) => {
    responses.add(res);
    if (draining) res.setHeader('Connection', 'close');
    res.once('finish', () => {
      if (responses.delete(res) && draining) completed += 1;
    });
    res.once('close', () => responses.delete(res));
  });

  return {
    async drain(timeoutMs) {
      const started = performance.now();
      const elapsedMs = () => Math.round(performance.now() - started);
      draining = true;
      for (const res of responses) {
        if (!res.headersSent) res.setHeader('Connection', 'close');
        else {
          // Too late for the header: end the connection once this response is out.
          const socket = res.socket;
          res.once('finish', () => socket?.end());
        }
      }
      // One full turn of the event loop first: a request whose bytes have already arrived gets parsed, so its
      // connection is busy (answered, with Connection: close) rather than idle and destroyed below.
      await new Promise((done) => setImmediate(() => setImmediate(done)));
      const alreadyClosing = [...sockets].filter((socket) => socket.destroyed).length;
      const inFlight = responses.size;
      // Node's close() also destroys the connections idle at this moment (no request begun). A request already
      // sent but still in the kernel's buffer looks the same: its client meets a reset before any response
      // byte, which is why the probes doc puts a preStop pause before SIGTERM.
      const closed = new Promise<void>((done) => server.close(() => done()));
      const idleClosed = [...sockets].filter((socket) => socket.destroyed).length - alreadyClosing;
      log.info({ connections: sockets.size, idleClosed, inFlight, drainTimeoutMs: timeoutMs }, 'drain: listener closed, idle connections closed, waiting for requests in flight');

      const allClosed = new Promise<boolean>((done) => {
        settle = () => {
          if (sockets.size === 0) done(true);
        };
        settle();
      });
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<boolean>((done) => {
        timer = setTimeout(() => done(false), timeoutMs);
      });
      const finished = await Promise.race([allClosed, deadline]);
      clearTimeout(timer);
      let cut = 0;
      if (finished) {
        log.info({ completed, elapsedMs: elapsedMs() }, 'drain: every request in flight answered, all connections closed');
      } else {
        cut = responses.size;
        log.warn({ cut, connections: sockets.size, completed, elapsedMs: elapsedMs(), drainTimeoutMs: timeoutMs }, 'drain: timed out, cutting the requests still in flight');
        server.closeAllConnections();
        // Sockets that never became HTTP connections (refused at the cap, an upgrade) are not in Node's list.
        for (const socket of sockets) socket.destroy();
      }
      await closed;
      return { completed, cut, timedOut: !finished, elapsedMs: elapsedMs() };
    },
  };
}
