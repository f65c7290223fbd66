/**
 * An in-process gRPC server that plays a SPIRE agent: both services from the package's own
 * protos, on a unix socket (or loopback TCP), with SPIRE's status codes and messages. Tokens are
 * real ES256 JWTs from a fresh jose key. A fake at the process edge: the clients under test talk
 * to it over a real socket.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Server,
  ServerCredentials,
  status,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceError,
} from '@grpc/grpc-js';
import { createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify, SignJWT, type CryptoKey, type JWK } from 'jose';
import { serviceDefinitions } from '../src/proto.js';

export const TRUST_DOMAIN = 'example.org';
export const KID = 'key-1';

/** A registration entry: the SPIFFE ID a workload with all these selectors gets. */
export interface Entry {
  spiffeId: string;
  selectors: { type: string; value: string }[];
}

type Unary<Req, Res> = (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void;
type Streaming<Req, Res> = (call: ServerWritableStream<Req, Res>) => void;

/** A queue of events a test awaits instead of sleeping. */
export class Events<T> {
  private readonly items: T[] = [];
  private readonly waiters: ((item: T) => void)[] = [];
  push(item: T): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter(item);
    else this.items.push(item);
  }
  next(): Promise<T> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  get pending(): number {
    return this.items.length;
  }
}

export class FakeAgent {
  /** SPIFFE IDs the Workload API caller holds; empty → PermissionDenied "no identity issued". */
  identities: string[] = [`spiffe://${TRUST_DOMAIN}/tessera`];
  /** Delegated Identity: whether the caller is in `authorized_delegates`. */
  authorizedDelegate = true;
  /** Delegated Identity: registration entries matched against the presented selectors. */
  entries: Entry[] = [];
  /** Bundle map sent on every bundle stream (trust-domain ID → JWKS JSON). */
  bundles: Record<string, string> = {};
  /** Refuse this many bundle streams with Unavailable before serving them. */
  failBundleStreams = 0;
  /** Refuse bundle streams with this status for good. */
  rejectBundleStreams: number | undefined;
  /** Unary calls never answer (for timeout and abort tests). */
  hang = false;
  /** Status details to send on a failed ValidateJWTSVID (to prove clients never copy them). */
  validateFailureDetails = 'token is invalid';
  /** Each bundle stream opened, named by RPC. */
  readonly bundleStreams = new Events<string>();
  /** Security header value of every request (undefined when missing). */
  readonly headers: (string | undefined)[] = [];

  private readonly open = new Set<ServerWritableStream<unknown, unknown>>();
  private readonly hanging: (() => void)[] = [];
  private server: Server | undefined;
  private dir: string | undefined;

  private constructor(
    readonly privateKey: CryptoKey,
    readonly publicJwk: JWK,
  ) {
    this.bundles = { [`spiffe://${TRUST_DOMAIN}`]: JSON.stringify({ keys: [publicJwk] }) };
  }

  /** Starts on a fresh unix socket (`unix:///tmp/…/a.sock`), or on 127.0.0.1 with `tcp: true`. */
  static async start(options: { tcp?: boolean } = {}): Promise<{ agent: FakeAgent; address: string }> {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const agent = new FakeAgent(privateKey, { ...(await exportJWK(publicKey)), kid: KID, alg: 'ES256' });
    const address = await agent.listen(options.tcp === true ? undefined : agent.socketPath());
    return { agent, address };
  }

  /** Binds again on the same socket after {@link stop} (an agent restart). */
  async restart(): Promise<void> {
    await this.listen(this.socketPath());
  }

  /** Public JWK for another key id, for bundle updates. */
  async extraJwk(kid: string): Promise<JWK> {
    const { publicKey } = await generateKeyPair('ES256');
    return { ...(await exportJWK(publicKey)), kid };
  }

  /** Sends the current bundles on every open bundle stream. */
  pushBundles(): void {
    for (const call of this.open) call.write({ bundles: this.bundleMessage() });
  }

  /** Fails every open bundle stream with `code` (default Unavailable). */
  dropStreams(code: number = status.UNAVAILABLE): void {
    for (const call of this.open) call.emit('error', { code, details: 'dropped by test' } satisfies Partial<ServiceError>);
    this.open.clear();
  }

  async mint(spiffeId: string, audience: readonly string[], lifetimeSeconds = 300): Promise<string> {
    return new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: KID, typ: 'JWT' })
      .setSubject(spiffeId)
      .setAudience([...audience])
      .setIssuedAt()
      .setExpirationTime(`${lifetimeSeconds}s`)
      .sign(this.privateKey);
  }

  /** Stops serving (streams end with Unavailable on the client). */
  async stop(): Promise<void> {
    for (const release of this.hanging.splice(0)) release();
    this.open.clear();
    this.server?.forceShutdown();
    this.server = undefined;
  }

  async close(): Promise<void> {
    await this.stop();
    if (this.dir !== undefined) rmSync(this.dir, { recursive: true, force: true });
  }

  private socketPath(): string {
    // A short path: sun_path holds about 100 bytes.
    this.dir ??= mkdtempSync(join(tmpdir(), 'tsp-'));
    return join(this.dir, 'a.sock');
  }

  private async listen(socket: string | undefined): Promise<string> {
    const server = new Server();
    const { workload, delegated } = serviceDefinitions();
    server.addService(workload, this.workloadHandlers());
    server.addService(delegated, this.delegatedHandlers());
    const bindTo = socket === undefined ? '127.0.0.1:0' : `unix://${socket}`;
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(bindTo, ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
    );
    this.server = server;
    return socket === undefined ? `tcp://127.0.0.1:${port}` : `unix://${socket}`;
  }

  private workloadHandlers() {
    const FetchJWTSVID: Unary<{ audience: string[]; spiffe_id: string }, unknown> = (call, callback) =>
      this.unary(call, callback, true, async () => {
        if (call.request.audience.length === 0) throw failure(status.INVALID_ARGUMENT, 'audience must be specified');
        const ids = this.identities.filter((id) => call.request.spiffe_id === '' || id === call.request.spiffe_id);
        if (ids.length === 0) throw failure(status.PERMISSION_DENIED, 'no identity issued');
        const svids = await Promise.all(ids.map(async (id) => ({ spiffe_id: id, svid: await this.mint(id, call.request.audience), hint: id.endsWith('/tessera') ? 'internal' : '' })));
        return { svids };
      });
    const ValidateJWTSVID: Unary<{ audience: string; svid: string }, unknown> = (call, callback) =>
      this.unary(call, callback, true, async () => {
        if (call.request.audience === '') throw failure(status.INVALID_ARGUMENT, 'audience must be specified');
        try {
          const { payload } = await jwtVerify(call.request.svid, createLocalJWKSet({ keys: [this.publicJwk] }), { audience: call.request.audience });
          return { spiffe_id: payload.sub, claims: jsonToStruct(payload) };
        } catch {
          throw failure(status.INVALID_ARGUMENT, this.validateFailureDetails);
        }
      });
    const FetchX509SVID: Streaming<unknown, unknown> = (call) => {
      if (!this.checkHeader(call, true)) return;
      call.write({
        svids: [
          {
            spiffe_id: `spiffe://${TRUST_DOMAIN}/tessera`,
            x509_svid: Buffer.concat([SHORT_DER, LONG_DER]),
            x509_svid_key: Buffer.from('pkcs8-key'),
            bundle: SHORT_DER,
            hint: '',
          },
        ],
        crl: [],
        federated_bundles: { 'spiffe://partner.example': Buffer.concat([LONG_DER, SHORT_DER]) },
      });
    };
    return { FetchJWTSVID, ValidateJWTSVID, FetchX509SVID, FetchJWTBundles: this.bundleStream('FetchJWTBundles', true) };
  }

  private delegatedHandlers() {
    const FetchJWTSVIDs: Unary<{ audience: string[]; selectors: { type: string; value: string }[]; pid: number }, unknown> = (call, callback) =>
      this.unary(call, callback, false, async () => {
        if (!this.authorizedDelegate) throw failure(status.PERMISSION_DENIED, 'caller not configured as an authorized delegate');
        const { audience, selectors, pid } = call.request;
        if ((selectors.length === 0) === (pid === 0)) throw failure(status.INVALID_ARGUMENT, 'must provide either selectors or non-zero PID, but not both');
        if (audience.length === 0) throw failure(status.INVALID_ARGUMENT, 'audience must be specified');
        const presented = new Set(selectors.map((s) => `${s.type}:${s.value}`));
        const matches = this.entries.filter((entry) => entry.selectors.every((s) => presented.has(`${s.type}:${s.value}`)));
        if (matches.length === 0) throw failure(status.PERMISSION_DENIED, 'no identity issued');
        const now = Math.floor(Date.now() / 1000);
        const svids = await Promise.all(
          matches.map(async (entry) => {
            const id = entry.spiffeId.slice(`spiffe://${TRUST_DOMAIN}`.length);
            return { token: await this.mint(entry.spiffeId, audience), id: { trust_domain: TRUST_DOMAIN, path: id }, expires_at: now + 300, issued_at: now, hint: '' };
          }),
        );
        return { svids };
      });
    return { FetchJWTSVIDs, SubscribeToJWTBundles: this.bundleStream('SubscribeToJWTBundles', false) };
  }

  private bundleStream(rpc: string, requireHeader: boolean): Streaming<unknown, unknown> {
    return (call) => {
      if (!this.checkHeader(call, requireHeader)) return;
      if (rpc === 'SubscribeToJWTBundles' && !this.authorizedDelegate) {
        call.emit('error', failure(status.PERMISSION_DENIED, 'caller not configured as an authorized delegate'));
        return;
      }
      this.bundleStreams.push(rpc);
      if (this.rejectBundleStreams !== undefined) {
        call.emit('error', failure(this.rejectBundleStreams, 'refused by test'));
        return;
      }
      if (this.failBundleStreams > 0) {
        this.failBundleStreams -= 1;
        call.emit('error', failure(status.UNAVAILABLE, 'starting up'));
        return;
      }
      const stream = call as ServerWritableStream<unknown, unknown>;
      this.open.add(stream);
      call.on('cancelled', () => this.open.delete(stream));
      // Spec: the first message is sent promptly after the request.
      call.write({ bundles: this.bundleMessage() });
    };
  }

  private unary<Req, Res>(
    call: ServerUnaryCall<Req, Res>,
    callback: sendUnaryData<Res>,
    requireHeader: boolean,
    handle: () => Promise<Res>,
  ): void {
    if (!this.checkHeader(call, requireHeader, callback)) return;
    if (this.hang) {
      this.hanging.push(() => callback(failure(status.UNAVAILABLE, 'agent stopped')));
      return;
    }
    handle().then(
      (response) => callback(null, response),
      (error: Partial<ServiceError>) => callback(error),
    );
  }

  private checkHeader(
    call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>,
    required: boolean,
    callback?: sendUnaryData<never>,
  ): boolean {
    const [value] = call.metadata.get('workload.spiffe.io');
    this.headers.push(typeof value === 'string' ? value : undefined);
    // Enforced for /SpiffeWorkloadAPI/ only, as SPIRE does.
    if (!required || value === 'true') return true;
    const error = failure(status.INVALID_ARGUMENT, 'security header missing from request');
    if (callback) callback(error);
    else call.emit('error', error);
    return false;
  }

  private bundleMessage(): Record<string, Buffer> {
    return Object.fromEntries(Object.entries(this.bundles).map(([key, value]) => [key, Buffer.from(value)]));
  }
}

export const SHORT_DER = Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01]);
export const LONG_DER = Buffer.concat([Buffer.from([0x30, 0x81, 0x82, 0x04, 0x80]), Buffer.alloc(128, 7)]);

function failure(code: number, details: string): Partial<ServiceError> {
  return { code, details, message: details };
}

function jsonToStruct(json: Record<string, unknown>): unknown {
  return { fields: Object.fromEntries(Object.entries(json).map(([key, value]) => [key, jsonToValue(value)])) };
}

function jsonToValue(value: unknown): unknown {
  if (value === null || value === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof value === 'number') return { numberValue: value };
  if (typeof value === 'string') return { stringValue: value };
  if (typeof value === 'boolean') return { boolValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map(jsonToValue) } };
  return { structValue: jsonToStruct(value as Record<string, unknown>) };
}
