/**
 * The gRPC plumbing both clients share: one insecure channel to a local endpoint, the security
 * header on every call, deadlines, AbortSignal, and server-streaming watches that reconnect.
 */
import { Client, credentials, Metadata, type ChannelOptions, type ClientReadableStream, type MethodDefinition, type ServiceDefinition } from '@grpc/grpc-js';
import { fromGrpcError, WorkloadApiError, type ApiKind } from './errors.js';

/** Options shared by {@link WorkloadApiClient} and {@link DelegatedIdentityClient}. */
export interface ClientOptions {
  /** Deadline of unary calls and of `fetchX509Svid`'s first message, in ms. Default 10 000. */
  readonly timeoutMs?: number;
  /** Watch reconnect backoff: starts at `initialMs` (default 1 000), doubles up to `maxMs` (default 30 000), resets after a message. */
  readonly backoff?: { readonly initialMs?: number; readonly maxMs?: number };
  /** Extra @grpc/grpc-js channel options, e.g. `grpc.initial_reconnect_backoff_ms`. */
  readonly channelOptions?: ChannelOptions;
}

/** What a watch does after reporting an error. */
export type WatchErrorInfo =
  /** The stream failed; a new one is opened after `delayMs`. */
  | { readonly next: 'reconnect'; readonly delayMs: number }
  /** A message (or part of one) was refused, or a callback threw; the stream goes on. */
  | { readonly next: 'continue' }
  /** The endpoint refused the request for good (InvalidArgument, Unimplemented); the watch has ended. */
  | { readonly next: 'stop' };

/** Receives a watch's errors. Must not throw. */
export type WatchErrorHandler = (error: WorkloadApiError, info: WatchErrorInfo) => void;

/** A running watch. */
export interface Watcher {
  /** Stops the watch: cancels the stream and any pending reconnect. Idempotent. */
  close(): void;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_INITIAL_BACKOFF_MS = 1_000;
const DEFAULT_MAX_BACKOFF_MS = 30_000;
// SPIFFE Workload Endpoint: every call carries this header; the agent answers InvalidArgument
// without it. It is SSRF hardening: a browser or proxy cannot be tricked into adding it.
const SECURITY_HEADER = 'workload.spiffe.io';

export class GrpcEndpoint {
  private readonly client: Client;
  private readonly timeoutMs: number;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly watches = new Set<Watcher>();
  private closed = false;

  constructor(
    target: string,
    private readonly service: ServiceDefinition,
    private readonly api: ApiKind,
    options: ClientOptions = {},
  ) {
    this.timeoutMs = positive(options.timeoutMs, DEFAULT_TIMEOUT_MS);
    this.initialBackoffMs = positive(options.backoff?.initialMs, DEFAULT_INITIAL_BACKOFF_MS);
    this.maxBackoffMs = Math.max(this.initialBackoffMs, positive(options.backoff?.maxMs, DEFAULT_MAX_BACKOFF_MS));
    // Insecure by design: the endpoint is a local socket whose peer credentials the agent checks.
    this.client = new Client(target, credentials.createInsecure(), options.channelOptions ?? {});
  }

  unary<Res>(rpc: string, request: object, signal?: AbortSignal): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      const method = this.method(rpc);
      if (this.closed) return reject(new WorkloadApiError('closed', rpc));
      if (signal?.aborted) return reject(new WorkloadApiError('cancelled', rpc));
      const onAbort = () => call.cancel();
      const call = this.client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize as (bytes: Buffer) => Res,
        request,
        this.metadata(),
        { deadline: Date.now() + this.timeoutMs },
        (error, response) => {
          signal?.removeEventListener('abort', onAbort);
          if (signal?.aborted) reject(new WorkloadApiError('cancelled', rpc));
          else if (error || response === undefined) reject(fromGrpcError(error, rpc, this.api));
          else resolve(response);
        },
      );
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Opens a server stream, resolves with its first message and cancels it. */
  firstMessage<Res>(rpc: string, request: object, signal?: AbortSignal): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      if (this.closed) return reject(new WorkloadApiError('closed', rpc));
      if (signal?.aborted) return reject(new WorkloadApiError('cancelled', rpc));
      let settled = false;
      const settle = (error: WorkloadApiError | undefined, message?: Res) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        call.cancel();
        if (error) reject(error);
        else resolve(message as Res);
      };
      const onAbort = () => settle(new WorkloadApiError('cancelled', rpc));
      const call = this.openStream<Res>(rpc, request, Date.now() + this.timeoutMs);
      call.on('data', (message: Res) => settle(undefined, message));
      call.on('error', (error) => settle(fromGrpcError(error, rpc, this.api)));
      call.on('end', () => settle(new WorkloadApiError('invalid_response', rpc, { detail: 'stream ended without a message' })));
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * Keeps a server stream open: every message goes to `onMessage` (each is the full state), which
   * returns the problems it found in it, reported without ending the stream;
   * on error or end the stream is reopened with exponential backoff, except after InvalidArgument
   * or Unimplemented, which the spec says not to retry.
   */
  watch<Res>(
    rpc: string,
    request: object,
    onMessage: (message: Res) => readonly WorkloadApiError[] | void,
    onError?: WatchErrorHandler,
  ): Watcher {
    if (this.closed) throw new WorkloadApiError('closed', rpc);
    this.method(rpc);
    let delayMs = this.initialBackoffMs;
    let call: ClientReadableStream<Res> | undefined;
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const report = (error: WorkloadApiError, info: WatchErrorInfo) => {
      try {
        onError?.(error, info);
      } catch {
        // A throwing error handler must not kill the watch or the process.
      }
    };
    const stop = () => {
      stopped = true;
      clearTimeout(timer);
      call?.cancel();
      this.watches.delete(watcher);
    };
    const connect = () => {
      if (stopped) return;
      let finished = false;
      let current: ClientReadableStream<Res>;
      try {
        current = this.openStream<Res>(rpc, request);
      } catch (cause) {
        // Runs from a timer: a throw here would be an uncaught exception.
        report(new WorkloadApiError('internal', rpc, { detail: 'could not open the stream', cause }), { next: 'reconnect', delayMs });
        timer = setTimeout(connect, delayMs);
        delayMs = Math.min(delayMs * 2, this.maxBackoffMs);
        return;
      }
      call = current;
      const finish = (error: unknown) => {
        if (finished || stopped) return;
        finished = true;
        if (error !== undefined) {
          const mapped = fromGrpcError(error, rpc, this.api);
          if (mapped.code === 'invalid_argument' || mapped.code === 'unimplemented') {
            stop();
            report(mapped, { next: 'stop' });
            return;
          }
          report(mapped, { next: 'reconnect', delayMs });
        }
        timer = setTimeout(connect, delayMs);
        delayMs = Math.min(delayMs * 2, this.maxBackoffMs);
      };
      current.on('data', (message: Res) => {
        if (finished || stopped) return;
        delayMs = this.initialBackoffMs;
        try {
          for (const problem of onMessage(message) ?? []) report(problem, { next: 'continue' });
        } catch (cause) {
          report(cause instanceof WorkloadApiError ? cause : new WorkloadApiError('internal', rpc, { detail: 'update callback threw', cause }), { next: 'continue' });
        }
      });
      // grpc-js emits 'error' (non-OK status) before the 'end' it queued, so the first wins.
      current.on('error', (error) => finish(error));
      current.on('end', () => finish(undefined));
    };
    const watcher: Watcher = { close: stop };
    this.watches.add(watcher);
    connect();
    return watcher;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const watcher of [...this.watches]) watcher.close();
    this.client.close();
  }

  private openStream<Res>(rpc: string, request: object, deadline?: number): ClientReadableStream<Res> {
    const method = this.method(rpc);
    return this.client.makeServerStreamRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize as (bytes: Buffer) => Res,
      request,
      this.metadata(),
      deadline === undefined ? {} : { deadline },
    );
  }

  private method(rpc: string): MethodDefinition<object, unknown> {
    const method = this.service[rpc];
    if (method === undefined) throw new WorkloadApiError('internal', rpc, { detail: 'unknown RPC' });
    return method as MethodDefinition<object, unknown>;
  }

  private metadata(): Metadata {
    const metadata = new Metadata();
    metadata.set(SECURITY_HEADER, 'true');
    return metadata;
  }
}

function positive(value: number | undefined, fallback: number): number {
  return value !== undefined && Number.isFinite(value) && value > 0 ? value : fallback;
}
