import { status } from '@grpc/grpc-js';
import { decodeJwt } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AddressError } from '../src/address.js';
import type { JwtBundle } from '../src/bundle.js';
import { DelegatedIdentityClient, parseSelector, SelectorError, type Selector } from '../src/delegated-identity.js';
import { WorkloadApiError } from '../src/errors.js';
import type { WatchErrorInfo } from '../src/grpc-endpoint.js';
import { Events, FakeAgent, TRUST_DOMAIN } from './fake-agent.js';

const FAST = { backoff: { initialMs: 5, maxMs: 40 }, timeoutMs: 2_000 };
const WEB = `spiffe://${TRUST_DOMAIN}/web`;
const UID = { type: 'unix', value: 'uid:1000' };

let agent: FakeAgent;
let client: DelegatedIdentityClient;

beforeEach(async () => {
  let address: string;
  ({ agent, address } = await FakeAgent.start());
  agent.entries = [
    { spiffeId: WEB, selectors: [UID] },
    { spiffeId: `spiffe://${TRUST_DOMAIN}/web-admin`, selectors: [UID, { type: 'unix', value: 'gid:50' }] },
  ];
  client = new DelegatedIdentityClient(address, FAST);
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

describe('parseSelector', () => {
  it.each([
    ['unix:uid:1000', { type: 'unix', value: 'uid:1000' }],
    ['k8s:ns:payments', { type: 'k8s', value: 'ns:payments' }],
    ['k8s:pod-label:app:web', { type: 'k8s', value: 'pod-label:app:web' }],
    ['docker:label:a=b', { type: 'docker', value: 'label:a=b' }],
  ])('splits %s at the first colon', (text, selector) => {
    expect(parseSelector(text)).toEqual(selector);
  });

  it.each([
    ['unix', 'missing_colon'],
    ['', 'missing_colon'],
    [':uid:1000', 'empty_type'],
    ['unix:', 'empty_value'],
  ] as const)('rejects %j (%s)', (text, reason) => {
    expect(() => parseSelector(text)).toThrow(SelectorError);
    expect(() => parseSelector(text)).toThrow(expect.objectContaining({ reason }));
  });
});

describe('DelegatedIdentityClient', () => {
  it('needs an explicit admin socket address (no environment fallback)', () => {
    const saved = process.env.SPIFFE_ENDPOINT_SOCKET;
    process.env.SPIFFE_ENDPOINT_SOCKET = 'unix:///tmp/public.sock';
    try {
      expect(() => new DelegatedIdentityClient('')).toThrow(AddressError);
      expect(() => new DelegatedIdentityClient('tcp://localhost:1')).toThrow(expect.objectContaining({ reason: 'not_ip' }));
    } finally {
      if (saved === undefined) delete process.env.SPIFFE_ENDPOINT_SOCKET;
      else process.env.SPIFFE_ENDPOINT_SOCKET = saved;
    }
  });

  it('fetches one JWT-SVID per matching entry', async () => {
    const svids = await client.fetchJwtSvids({ audience: ['https://broker.example'], selectors: [UID] });
    expect(svids.map((s) => s.spiffeId)).toEqual([WEB]);
    const [svid] = svids;
    const claims = decodeJwt(svid?.token ?? '');
    expect(claims.sub).toBe(WEB);
    expect(claims.aud).toEqual(['https://broker.example']);
    expect(svid?.expiresAt).toBeInstanceOf(Date);
    expect(svid?.issuedAt).toBeInstanceOf(Date);
    expect((svid?.expiresAt.getTime() ?? 0) - (svid?.issuedAt.getTime() ?? 0)).toBe(300_000);

    const both = await client.fetchJwtSvids({ audience: ['a'], selectors: [UID, parseSelector('unix:gid:50')] });
    expect(both.map((s) => s.spiffeId)).toEqual([WEB, `spiffe://${TRUST_DOMAIN}/web-admin`]);
  });

  it('maps "no identity issued" to no_identity', async () => {
    const error = await failure(client.fetchJwtSvids({ audience: ['a'], selectors: [{ type: 'unix', value: 'uid:4242' }] }));
    expect(error).toMatchObject({ code: 'no_identity', rpc: 'FetchJWTSVIDs', grpcStatus: status.PERMISSION_DENIED });
  });

  it('maps "not an authorized delegate" to not_authorized_delegate', async () => {
    agent.authorizedDelegate = false;
    const error = await failure(client.fetchJwtSvids({ audience: ['a'], selectors: [UID] }));
    expect(error).toMatchObject({ code: 'not_authorized_delegate', grpcStatus: status.PERMISSION_DENIED });
    expect(error.message).not.toContain('configured');
  });

  it.each<[string, { audience: string[]; selectors: Selector[] }]>([
    ['no selectors', { audience: ['a'], selectors: [] }],
    ['an empty selector type', { audience: ['a'], selectors: [{ type: '', value: 'uid:1' }] }],
    ['a colon in the type', { audience: ['a'], selectors: [{ type: 'unix:uid', value: '1' }] }],
    ['an empty selector value', { audience: ['a'], selectors: [{ type: 'unix', value: '' }] }],
    ['no audience', { audience: [], selectors: [UID] }],
  ])('refuses %s before calling the agent', async (_name, request) => {
    expect(await failure(client.fetchJwtSvids(request))).toMatchObject({ code: 'invalid_argument', grpcStatus: undefined });
    expect(agent.headers).toEqual([]);
  });

  it('sends the selectors as given, with the security header', async () => {
    await client.fetchJwtSvids({ audience: ['a'], selectors: [UID] });
    expect(agent.headers).toEqual(['true']);
  });

  it('subscribes to JWT bundles with updates and reconnects', async () => {
    const updates = new Events<Map<string, JwtBundle>>();
    const errors = new Events<{ error: WorkloadApiError; info: WatchErrorInfo }>();
    const watcher = client.subscribeToJwtBundles(
      (bundles) => updates.push(bundles),
      (error, info) => errors.push({ error, info }),
    );
    expect((await updates.next()).get(TRUST_DOMAIN)?.keys.map((k) => k.kid)).toEqual(['key-1']);
    expect(await agent.bundleStreams.next()).toBe('SubscribeToJWTBundles');

    agent.bundles = { [`spiffe://${TRUST_DOMAIN}`]: JSON.stringify({ keys: [await agent.extraJwk('key-2')] }) };
    agent.pushBundles();
    expect((await updates.next()).get(TRUST_DOMAIN)?.keys.map((k) => k.kid)).toEqual(['key-2']);

    agent.dropStreams();
    expect(await errors.next()).toMatchObject({ error: { code: 'unavailable', rpc: 'SubscribeToJWTBundles' }, info: { next: 'reconnect', delayMs: 5 } });
    expect((await updates.next()).get(TRUST_DOMAIN)?.keys.map((k) => k.kid)).toEqual(['key-2']);
    watcher.close();
    watcher.close();
  });

  it('keeps retrying a subscription refused as not authorized, and reports it', async () => {
    agent.authorizedDelegate = false;
    const updates = new Events<Map<string, JwtBundle>>();
    const errors = new Events<{ error: WorkloadApiError; info: WatchErrorInfo }>();
    client.subscribeToJwtBundles(
      (bundles) => updates.push(bundles),
      (error, info) => errors.push({ error, info }),
    );
    expect(await errors.next()).toMatchObject({ error: { code: 'not_authorized_delegate' }, info: { next: 'reconnect', delayMs: 5 } });
    expect(await errors.next()).toMatchObject({ error: { code: 'not_authorized_delegate' }, info: { next: 'reconnect', delayMs: 10 } });
    agent.authorizedDelegate = true;
    expect((await updates.next()).has(TRUST_DOMAIN)).toBe(true);
  });

  it('stops a subscription the agent refuses as InvalidArgument', async () => {
    agent.rejectBundleStreams = status.INVALID_ARGUMENT;
    const errors = new Events<{ error: WorkloadApiError; info: WatchErrorInfo }>();
    client.subscribeToJwtBundles(
      () => undefined,
      (error, info) => errors.push({ error, info }),
    );
    expect(await errors.next()).toMatchObject({ error: { code: 'invalid_argument' }, info: { next: 'stop' } });
  });
});
