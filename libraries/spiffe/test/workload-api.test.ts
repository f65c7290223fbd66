import { Client, credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { decodeJwt } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { JwtBundle } from '../src/bundle.js';
import { WorkloadApiError } from '../src/errors.js';
import type { WatchErrorInfo } from '../src/grpc-endpoint.js';
import { serviceDefinitions } from '../src/proto.js';
import { WorkloadApiClient, type X509Context } from '../src/workload-api.js';
import { Events, FakeAgent, LONG_DER, SHORT_DER, TRUST_DOMAIN } from './fake-agent.js';

const FAST = { backoff: { initialMs: 5, maxMs: 40 }, timeoutMs: 2_000 };
const TESSERA = `spiffe://${TRUST_DOMAIN}/tessera`;

let agent: FakeAgent;
let address: string;
let client: WorkloadApiClient;

beforeEach(async () => {
  ({ agent, address } = await FakeAgent.start());
  client = new WorkloadApiClient(address, FAST);
});

afterEach(async () => {
  client.close();
  await agent.close();
});

async function failure(promise: Promise<unknown>): Promise<WorkloadApiError> {
  const error = await promise.then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(WorkloadApiError);
  return error as WorkloadApiError;
}

function watchEvents() {
  const updates = new Events<Map<string, JwtBundle>>();
  const errors = new Events<{ error: WorkloadApiError; info: WatchErrorInfo }>();
  return { updates, errors, onUpdate: (b: Map<string, JwtBundle>) => updates.push(b), onError: (error: WorkloadApiError, info: WatchErrorInfo) => errors.push({ error, info }) };
}

describe('WorkloadApiClient over a unix socket', () => {
  it('uses a short socket path', () => {
    expect(address.length).toBeLessThan(100);
    expect(address.startsWith('unix:///')).toBe(true);
  });

  it('fetches JWT-SVIDs and sends the security header', async () => {
    const svids = await client.fetchJwtSvid({ audience: ['https://broker.example'] });
    expect(svids).toHaveLength(1);
    const [svid] = svids;
    expect(svid?.spiffeId).toBe(TESSERA);
    expect(svid?.hint).toBe('internal');
    const claims = decodeJwt(svid?.token ?? '');
    expect(claims.aud).toEqual(['https://broker.example']);
    expect(svid?.expiresAt.getTime()).toBe((claims.exp ?? 0) * 1000);
    expect(agent.headers).toEqual(['true']);
  });

  it('fetches one JWT-SVID per identity, or only the one asked for', async () => {
    agent.identities = [TESSERA, `spiffe://${TRUST_DOMAIN}/other`];
    expect((await client.fetchJwtSvid({ audience: ['a'] })).map((s) => s.spiffeId)).toEqual(agent.identities);
    const only = await client.fetchJwtSvid({ audience: ['a', 'b'], spiffeId: `spiffe://${TRUST_DOMAIN}/other` });
    expect(only.map((s) => s.spiffeId)).toEqual([`spiffe://${TRUST_DOMAIN}/other`]);
    expect(only[0]).not.toHaveProperty('hint');
  });

  it('maps PermissionDenied (no identity issued)', async () => {
    agent.identities = [];
    const error = await failure(client.fetchJwtSvid({ audience: ['a'] }));
    expect(error).toMatchObject({ code: 'permission_denied', rpc: 'FetchJWTSVID', grpcStatus: status.PERMISSION_DENIED, retryable: true });
  });

  it('refuses malformed answers from the agent as invalid_response', async () => {
    agent.identities = ['spiffe://Example.org/x'];
    expect(await failure(client.fetchJwtSvid({ audience: ['a'] }))).toMatchObject({ code: 'invalid_response', detail: 'response carries an invalid SPIFFE ID' });
  });

  it('checks arguments before calling', async () => {
    expect(await failure(client.fetchJwtSvid({ audience: [] }))).toMatchObject({ code: 'invalid_argument', grpcStatus: undefined });
    expect(await failure(client.fetchJwtSvid({ audience: [''] }))).toMatchObject({ code: 'invalid_argument' });
    expect(await failure(client.fetchJwtSvid({ audience: ['a'], spiffeId: 'spiffe://Bad' }))).toMatchObject({ code: 'invalid_argument' });
    expect(await failure(client.validateJwtSvid('', 'a'))).toMatchObject({ code: 'invalid_argument' });
    expect(agent.headers).toEqual([]);
  });

  it('validates a JWT-SVID and returns its claims as JSON', async () => {
    const token = await agent.mint(TESSERA, ['aud-1']);
    const result = await client.validateJwtSvid(token, 'aud-1');
    expect(result.spiffeId).toBe(TESSERA);
    expect(result.claims).toMatchObject({ sub: TESSERA, aud: ['aud-1'] });
    expect(typeof result.claims.exp).toBe('number');
  });

  it('maps a rejected token to invalid_argument without leaking token or server text', async () => {
    const token = await agent.mint(TESSERA, ['aud-1']);
    agent.validateFailureDetails = `bad token ${token}`;
    const error = await failure(client.validateJwtSvid(token, 'other-audience'));
    expect(error).toMatchObject({ code: 'invalid_argument', retryable: false });
    const everything = [error.message, String(error), error.stack, JSON.stringify(error), JSON.stringify(Object.entries(error))].join('\n');
    expect(everything).not.toContain(token);
    expect(everything).not.toContain(token.split('.')[1]);
    expect(everything).not.toContain('bad token');
  });

  it('fetches the first X.509-SVID message and splits the DER', async () => {
    const context = await client.fetchX509Svid();
    expect(context.svids).toHaveLength(1);
    expect(context.svids[0]).toMatchObject({ spiffeId: TESSERA, certChainDer: [SHORT_DER, LONG_DER], keyPkcs8Der: Buffer.from('pkcs8-key'), bundleDer: [SHORT_DER] });
    expect(context.federatedBundles).toEqual(new Map([['partner.example', [LONG_DER, SHORT_DER]]]));
  });

  it('watches X.509-SVIDs: each message is a whole context, parsed like fetchX509Svid', async () => {
    const context = await new Promise<X509Context>((resolve) => {
      const watcher = client.watchX509Svids((update) => {
        watcher.close();
        resolve(update);
      });
    });
    expect(context.svids[0]).toMatchObject({ spiffeId: TESSERA, certChainDer: [SHORT_DER, LONG_DER], keyPkcs8Der: Buffer.from('pkcs8-key') });
    expect(context.federatedBundles.get('partner.example')).toEqual([LONG_DER, SHORT_DER]);
  });

  it('streams JWT bundles, pushes updates and sends the header', async () => {
    const events = watchEvents();
    const watcher = client.watchJwtBundles(events.onUpdate, events.onError);
    const first = await events.updates.next();
    expect([...first.keys()]).toEqual([TRUST_DOMAIN]);
    expect(first.get(TRUST_DOMAIN)?.keys.map((k) => k.kid)).toEqual(['key-1']);

    const extra = await agent.extraJwk('key-2');
    agent.bundles = {
      [`spiffe://${TRUST_DOMAIN}`]: JSON.stringify({ keys: [agent.publicJwk, extra] }),
      'spiffe://partner.example': JSON.stringify({ keys: [{ ...extra, kid: 'p-1' }] }),
    };
    agent.pushBundles();
    const second = await events.updates.next();
    expect(second.get(TRUST_DOMAIN)?.keys.map((k) => k.kid)).toEqual(['key-1', 'key-2']);
    expect(second.get('partner.example')?.trustDomain).toBe('partner.example');

    // Full state: a trust domain missing from a message is gone.
    agent.bundles = { [`spiffe://${TRUST_DOMAIN}`]: JSON.stringify({ keys: [] }) };
    agent.pushBundles();
    const third = await events.updates.next();
    expect([...third.keys()]).toEqual([TRUST_DOMAIN]);
    expect(third.get(TRUST_DOMAIN)?.keys).toEqual([]);
    watcher.close();
    expect(agent.headers.every((h) => h === 'true')).toBe(true);
    expect(events.errors.pending).toBe(0);
  });

  it('leaves a refused bundle out and reports it without ending the stream', async () => {
    agent.bundles[`spiffe://partner.example`] = '{"keys":[{"kty":"EC"}]}';
    const events = watchEvents();
    client.watchJwtBundles(events.onUpdate, events.onError);
    const update = await events.updates.next();
    expect([...update.keys()]).toEqual([TRUST_DOMAIN]);
    const { error, info } = await events.errors.next();
    expect(info).toEqual({ next: 'continue' });
    expect(error).toMatchObject({ code: 'invalid_response', rpc: 'FetchJWTBundles', detail: 'bundle of partner.example refused (missing_kid)' });
    agent.pushBundles();
    await events.updates.next();
  });

  it('reconnects when the stream drops, with backoff reset after a message', async () => {
    const events = watchEvents();
    client.watchJwtBundles(events.onUpdate, events.onError);
    await events.updates.next();
    await agent.bundleStreams.next();

    agent.dropStreams();
    const dropped = await events.errors.next();
    expect(dropped.error.code).toBe('unavailable');
    expect(dropped.info).toEqual({ next: 'reconnect', delayMs: 5 });
    await agent.bundleStreams.next();
    await events.updates.next();

    agent.dropStreams();
    expect((await events.errors.next()).info).toEqual({ next: 'reconnect', delayMs: 5 });
    await events.updates.next();
  });

  it('backs off exponentially up to the maximum while the agent refuses', async () => {
    agent.failBundleStreams = 5;
    const events = watchEvents();
    client.watchJwtBundles(events.onUpdate, events.onError);
    const delays: number[] = [];
    for (let i = 0; i < 5; i += 1) {
      const { error, info } = await events.errors.next();
      expect(error.code).toBe('unavailable');
      if (info.next === 'reconnect') delays.push(info.delayMs);
    }
    expect(delays).toEqual([5, 10, 20, 40, 40]);
    expect((await events.updates.next()).has(TRUST_DOMAIN)).toBe(true);
  });

  it('never retries InvalidArgument', async () => {
    agent.rejectBundleStreams = status.INVALID_ARGUMENT;
    const events = watchEvents();
    client.watchJwtBundles(events.onUpdate, events.onError);
    const { error, info } = await events.errors.next();
    expect(error.code).toBe('invalid_argument');
    expect(info).toEqual({ next: 'stop' });
    // Round trips on the same channel give a (wrongly) scheduled 5 ms retry time to show up.
    for (let i = 0; i < 3; i += 1) await client.fetchJwtSvid({ audience: ['a'] });
    await new Promise((resolve) => setImmediate(resolve));
    expect(agent.bundleStreams.pending).toBe(1);
  });

  it('recovers after the agent restarts on the same socket', async () => {
    client.close();
    client = new WorkloadApiClient(address, { ...FAST, channelOptions: { 'grpc.initial_reconnect_backoff_ms': 10, 'grpc.max_reconnect_backoff_ms': 50 } });
    const events = watchEvents();
    client.watchJwtBundles(events.onUpdate, events.onError);
    await events.updates.next();
    await agent.stop();
    expect((await events.errors.next()).error.code).toBe('unavailable');
    await agent.restart();
    expect((await events.updates.next()).has(TRUST_DOMAIN)).toBe(true);
  });

  it('honours AbortSignal and the call timeout', async () => {
    agent.hang = true;
    const aborted = AbortSignal.abort();
    expect(await failure(client.fetchJwtSvid({ audience: ['a'], signal: aborted }))).toMatchObject({ code: 'cancelled' });

    const controller = new AbortController();
    const pending = client.fetchJwtSvid({ audience: ['a'], signal: controller.signal });
    controller.abort();
    expect(await failure(pending)).toMatchObject({ code: 'cancelled', retryable: false });

    const quick = new WorkloadApiClient(address, { timeoutMs: 30 });
    try {
      expect(await failure(quick.fetchJwtSvid({ audience: ['a'] }))).toMatchObject({ code: 'timeout', retryable: true });
    } finally {
      quick.close();
    }
  });

  it('reports unavailable when nothing listens, and closed after close()', async () => {
    await agent.stop();
    expect(await failure(client.fetchJwtSvid({ audience: ['a'] }))).toMatchObject({ code: 'unavailable', retryable: true });
    client.close();
    expect(await failure(client.fetchJwtSvid({ audience: ['a'] }))).toMatchObject({ code: 'closed' });
    expect(() => client.watchJwtBundles(() => undefined)).toThrow(WorkloadApiError);
  });

  it('close() ends running watches', async () => {
    const events = watchEvents();
    client.watchJwtBundles(events.onUpdate, events.onError);
    await events.updates.next();
    client.close();
    agent.pushBundles();
    await client.fetchJwtSvid({ audience: ['a'] }).catch(() => undefined);
    expect(events.updates.pending + events.errors.pending).toBe(0);
  });
});

describe('the fake agent enforces the security header', () => {
  it('answers InvalidArgument to a client without it', async () => {
    const raw = new Client(address.replace('unix://', 'unix://'), credentials.createInsecure());
    const method = serviceDefinitions().workload.FetchJWTSVID!;
    const error = await new Promise<ServiceError | null>((resolve) =>
      raw.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, { audience: ['a'] }, new Metadata(), (e) => resolve(e)),
    );
    raw.close();
    expect(error?.code).toBe(status.INVALID_ARGUMENT);
    expect(error?.details).toBe('security header missing from request');
  });
});

describe('WorkloadApiClient over tcp://', () => {
  it('fetches JWT-SVIDs and streams bundles from a loopback port', async () => {
    const tcp = await FakeAgent.start({ tcp: true });
    const tcpClient = new WorkloadApiClient(tcp.address, FAST);
    try {
      expect(tcp.address).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
      const [svid] = await tcpClient.fetchJwtSvid({ audience: ['a'] });
      expect(svid?.spiffeId).toBe(TESSERA);
      const events = watchEvents();
      tcpClient.watchJwtBundles(events.onUpdate, events.onError);
      expect((await events.updates.next()).has(TRUST_DOMAIN)).toBe(true);
    } finally {
      tcpClient.close();
      await tcp.agent.close();
    }
  });

  it('takes the address from SPIFFE_ENDPOINT_SOCKET', async () => {
    const saved = process.env.SPIFFE_ENDPOINT_SOCKET;
    process.env.SPIFFE_ENDPOINT_SOCKET = address;
    const envClient = new WorkloadApiClient(undefined, FAST);
    try {
      expect(await envClient.fetchJwtSvid({ audience: ['a'] })).toHaveLength(1);
    } finally {
      envClient.close();
      if (saved === undefined) delete process.env.SPIFFE_ENDPOINT_SOCKET;
      else process.env.SPIFFE_ENDPOINT_SOCKET = saved;
    }
  });
});
