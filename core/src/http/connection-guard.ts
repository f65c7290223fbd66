import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { Server as TlsServer, type TLSSocket, type TlsOptions } from 'node:tls';
import type { Logger } from '@tessera/plugin-sdk';
import type { BrokerConfig } from '../config/schema.js';

export type ConnectionLimits = BrokerConfig['limits']['connections'];

/** Cap warnings come at most this often; each one counts what happened since the previous one. */
const WARN_INTERVAL_MS = 10_000;

/**
 * Node enforces headersTimeout and requestTimeout only when a periodic sweep runs (every 30 s by default), so
 * a 10 s headers bound actually let a connection live 30–40 s (measured on Node 24). A sweep at a quarter
 * of the headers bound keeps that overshoot small. Each sweep walks the connection list, which is capped.
 */
function sweepIntervalMs(limits: ConnectionLimits): number {
  return Math.max(25, Math.min(1_000, Math.floor(limits.headersTimeoutMs / 4)));
}

/**
 * An HTTP server that bounds every phase of a connection and caps how many are open (see `guardConnections`);
 * HTTPS when `tls` is given (its `handshakeTimeout` bounds the handshake, which precedes the headers bound).
 */
export function createGuardedServer(limits: ConnectionLimits, log: Logger, listener: RequestListener, tls?: TlsOptions): Server {
  const options = {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: sweepIntervalMs(limits),
  };
  const server: Server = tls ? createHttpsServer({ ...options, ...tls }, listener) : createServer(options, listener);
  guardConnections(server, limits, log);
  return server;
}

/**
 * Bounds a connection before its first byte (here), while headers and body arrive (Node's sweep), when no
 * byte moves at all (socket idle timeout) and between keep-alive requests. At the cap the connection idle
 * longest (no request in flight: silent, still sending headers, or kept alive) is closed for the newcomer,
 * then the one receiving a request body the longest, so a burst of silent or slow-uploading sockets cannot
 * lock clients out; only when every connection has a whole request being answered is the newcomer refused.
 */
export function guardConnections(server: Server, limits: ConnectionLimits, log: Logger): void {
  server.headersTimeout = limits.headersTimeoutMs;
  server.requestTimeout = limits.requestTimeoutMs;
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  server.timeout = limits.idleTimeoutMs;

  // A Set iterates in insertion order, and a socket is re-added whenever it turns idle: the first is the longest idle.
  const idle = new Set<Socket>();
  // Requests in flight per socket, in arrival order: the latest is the one whose body may still be arriving.
  const inFlight = new Map<Socket, IncomingMessage[]>();
  const warning = capWarning(log, limits.maxConnections);
  const transportOf = tlsTransports(server);

  // Over TLS this is the TCP socket: counted and capped from the start, its first byte is the ClientHello.
  server.on('connection', (socket: Socket) => {
    if (idle.size + inFlight.size >= limits.maxConnections) {
      // A request whose body is still arriving holds its slot at the sender's pace: as evictable as an idle one.
      const victim = idle.values().next().value ?? oldestStillUploading(inFlight);
      if (victim === undefined) {
        warning.note('refused');
        socket.destroy();
        return;
      }
      idle.delete(victim);
      inFlight.delete(victim);
      victim.destroy();
      warning.note('evicted');
    }
    idle.add(socket);
    // Node's headers bound would close a silent connection only at a sweep; a client that connects means to talk.
    const firstByte = setTimeout(() => {
      if (socket.bytesRead === 0) socket.destroy();
    }, limits.firstByteTimeoutMs).unref();
    socket.once('close', () => {
      clearTimeout(firstByte);
      idle.delete(socket);
      inFlight.delete(socket);
    });
  });

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = transportOf(req.socket);
    if (!idle.delete(socket) && !inFlight.has(socket)) return;
    // Pipelined requests can be in flight together on one socket.
    inFlight.set(socket, [...(inFlight.get(socket) ?? []), req]);
    let done = false;
    const finished = () => {
      if (done) return;
      done = true;
      const left = (inFlight.get(socket) ?? []).filter((pending) => pending !== req);
      if (left.length > 0) inFlight.set(socket, left);
      else if (inFlight.delete(socket) && !socket.destroyed) idle.add(socket);
    };
    res.once('finish', finished);
    res.once('close', finished);
  });

  server.once('close', () => warning.flush());
}

/**
 * Over TLS, requests arrive on a TLSSocket layered on the TCP socket the guard counts, and Node links the
 * two only through internals. Both report the same peer address and port, unique among open connections.
 * Over plain HTTP (or if the handshake outlived its TCP socket) a request's socket is its own transport.
 */
function tlsTransports(server: Server): (socket: Socket) => Socket {
  if (!(server instanceof TlsServer)) return (socket) => socket;
  const handshaking = new Map<string, Socket>();
  const transports = new WeakMap<Socket, Socket>();
  const peer = (socket: Socket) => `${socket.remoteAddress}|${socket.remotePort}`;
  server.on('connection', (socket: Socket) => {
    const key = peer(socket);
    handshaking.set(key, socket);
    socket.once('close', () => {
      if (handshaking.get(key) === socket) handshaking.delete(key);
    });
  });
  server.on('secureConnection', (secure: TLSSocket) => {
    const key = peer(secure);
    const transport = handshaking.get(key);
    if (transport === undefined) return;
    handshaking.delete(key);
    transports.set(secure, transport);
  });
  return (socket) => transports.get(socket) ?? socket;
}

/** The socket that has been receiving a request body the longest (a Map iterates in insertion order). */
function oldestStillUploading(inFlight: ReadonlyMap<Socket, readonly IncomingMessage[]>): Socket | undefined {
  for (const [socket, requests] of inFlight) if (requests.at(-1)?.complete === false) return socket;
  return undefined;
}

/** One warn line per interval at most, so a flood cannot flood the log too; counts are never dropped. */
function capWarning(log: Logger, maxConnections: number) {
  const counts = { evicted: 0, refused: 0 };
  let lastAt = Number.NEGATIVE_INFINITY;
  let pending: NodeJS.Timeout | undefined;
  const flush = () => {
    clearTimeout(pending);
    pending = undefined;
    if (counts.evicted + counts.refused === 0) return;
    lastAt = Date.now();
    log.warn({ maxConnections, evicted: counts.evicted, refused: counts.refused }, 'connection cap reached: idle connections closed for new ones (evicted), new ones refused while all were busy (refused), since the last warning');
    counts.evicted = 0;
    counts.refused = 0;
  };
  return {
    note(kind: 'evicted' | 'refused') {
      counts[kind] += 1;
      const wait = lastAt + WARN_INTERVAL_MS - Date.now();
      if (wait <= 0) flush();
      else pending ??= setTimeout(flush, wait).unref();
    },
    flush,
  };
}
