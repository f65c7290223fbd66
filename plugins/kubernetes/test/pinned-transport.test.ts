import { HttpMethod, KubeConfig, RequestContext } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLoopbackServer, type LoopbackServer } from '@tessera/plugin-testkit';
import { PinnedTransport, TransportRefusal } from '../src/pinned-transport.js';

// Two paths: with the dispatcher client-node builds from a kubeconfig's TLS settings (CA, client
// certificate, proxy), and without one (no TLS settings at all), sent with fetch.
describe.for([
  ['with the kubeconfig dispatcher', true],
  ['without a dispatcher', false],
] as const)('PinnedTransport %s', ([, withDispatcher]) => {
  let server: LoopbackServer;
  let elsewhere: LoopbackServer;
  const received: string[] = [];

  beforeAll(async () => {
    elsewhere = await startLoopbackServer((request, response) => {
      received.push(request.url ?? '');
      response.writeHead(201).end('{}');
    });
    server = await startLoopbackServer((request, response) => {
      request.resume();
      if (request.url === '/redirect') return void response.writeHead(307, { location: `${elsewhere.url}/stolen` }).end();
      if (request.url === '/huge') return void response.writeHead(200, { 'content-type': 'application/json' }).end(`"${'x'.repeat(2_000_000)}"`);
      response.writeHead(201, { 'content-type': 'application/json' }).end('{"status":{"authenticated":false}}');
    });
  });
  afterAll(async () => {
    await server.close();
    await elsewhere.close();
  });

  const post = async (path: string, origin = server.url) => {
    const request = new RequestContext(`${server.url}${path}`, HttpMethod.POST);
    request.setBody('{"spec":{"token":"t"}}');
    if (withDispatcher) {
      // What client-node does for every request: credentials and TLS settings from the kubeconfig.
      const kubeConfig = new KubeConfig();
      kubeConfig.loadFromClusterAndUser({ name: 'loopback', server: server.url, skipTLSVerify: true }, { name: 'reviewer', token: 'reviewer-token' });
      await kubeConfig.applySecurityAuthentication(request);
      expect(request.getDispatcher()).toBeDefined();
    }
    return new PinnedTransport(origin, AbortSignal.timeout(2_000)).send(request);
  };
  const refusal = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => error as TransportRefusal);

  it('sends to the cluster origin and hands back the answer', async () => {
    const response = await post('/apis/authentication.k8s.io/v1/tokenreviews');
    expect(response.httpStatusCode).toBe(201);
    expect(await response.body.text()).toBe('{"status":{"authenticated":false}}');
  });

  it('refuses redirects, other origins and oversized answers', async () => {
    expect((await refusal(post('/redirect')))?.kind).toBe('redirect');
    expect(received).toEqual([]);
    expect((await refusal(post('/any', 'https://kubernetes.default.svc')))?.kind).toBe('origin');
    expect((await refusal(post('/huge')))?.kind).toBe('too_large');
  });
});
