import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { UpstreamError } from '@tessera/plugin-sdk';
import { GuardedFetcher, type GuardedFetcherOptions, type Resolver } from '../src/http/fetcher.js';
import { startLoopbackServer, type LoopbackServer } from './support/loopback.js';

const OPTIONS: GuardedFetcherOptions = { allowLoopbackHttp: true, timeoutMs: 5_000, maxResponseBytes: 1_024 };

let server: LoopbackServer;
/** Timers started by the server (endless bodies); cleared after each test. */
const timers = new Set<NodeJS.Timeout>();

beforeEach(async () => {
  server = await startLoopbackServer((req, res) => {
    switch (req.url) {
      case '/ok':
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ keys: [{ kid: 'a' }] }));
        return;
      case '/redirect':
        res.writeHead(302, { location: '/ok' });
        res.end();
        return;
      case '/500':
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end('{}');
        return;
      case '/not-json':
        res.setHeader('content-type', 'application/json');
        res.end('<html>not json</html>');
        return;
      case '/large': {
        const body = JSON.stringify({ pad: 'x'.repeat(2_000) });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
        return;
      }
      case '/endless': {
        // No content-length: chunked, and it never ends on its own.
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"pad":"');
        const timer = setInterval(() => res.write('x'.repeat(256)), 1);
        timers.add(timer);
        res.on('close', () => clearInterval(timer));
        return;
      }
      case '/hang':
        return; // never answers
      case '/stall-body':
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"a":');
        return; // headers sent, body never finishes
      default:
        res.writeHead(404);
        res.end();
    }
  });
});

afterEach(async () => {
  for (const timer of timers) clearInterval(timer);
  timers.clear();
  await server.close();
});

async function upstreamError(promise: Promise<unknown>): Promise<UpstreamError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(UpstreamError);
  return error as UpstreamError;
}

describe('GuardedFetcher', () => {
  it('fetches and parses JSON from an allowed loopback URL', async () => {
    await expect(new GuardedFetcher(OPTIONS).getJson(`${server.origin}/ok`)).resolves.toEqual({ keys: [{ kid: 'a' }] });
    expect(server.requests).toEqual(['/ok']);
  });

  describe('URL checks (nothing is sent)', () => {
    it('refuses plain http to a non-loopback host without resolving it', async () => {
      let lookups = 0;
      const counting: Resolver = async () => {
        lookups += 1;
        return [{ address: '93.184.215.14', family: 4 }];
      };
      const strict = { ...OPTIONS, allowLoopbackHttp: false };
      const error = await upstreamError(new GuardedFetcher(strict, counting).getJson('http://example.com/jwks.json'));
      expect(error.message).toContain('https required');
      expect(lookups).toBe(0);
    });

    it('refuses loopback http when allowLoopbackHttp is false', async () => {
      const error = await upstreamError(new GuardedFetcher({ ...OPTIONS, allowLoopbackHttp: false }).getJson(`${server.origin}/ok`));
      expect(error.message).toContain('https required');
      expect(server.requests).toEqual([]);
    });

    it('refuses URLs that carry credentials', async () => {
      const withUser = server.origin.replace('http://', 'http://user:secret@');
      const error = await upstreamError(new GuardedFetcher(OPTIONS).getJson(`${withUser}/ok`));
      expect(error.message).toBe('URL carries credentials');
      expect(error.message).not.toContain('secret');
      expect(server.requests).toEqual([]);
    });

    it.each(['not a url', '/relative/path', 'file:///etc/passwd', 'ftp://127.0.0.1/x'])('refuses %j', async (target) => {
      await upstreamError(new GuardedFetcher(OPTIONS).getJson(target));
      expect(server.requests).toEqual([]);
    });
  });

  it('does not follow redirects', async () => {
    const error = await upstreamError(new GuardedFetcher(OPTIONS).getJson(`${server.origin}/redirect`));
    expect(error.message).toContain('HTTP 302');
    expect(server.requests).toEqual(['/redirect']);
  });

  it('refuses a non-200 answer', async () => {
    const error = await upstreamError(new GuardedFetcher(OPTIONS).getJson(`${server.origin}/500`));
    expect(error.message).toContain('HTTP 500');
  });

  it('refuses invalid JSON', async () => {
    const error = await upstreamError(new GuardedFetcher(OPTIONS).getJson(`${server.origin}/not-json`));
    expect(error.message).toContain('invalid JSON');
  });

  describe('size cap', () => {
    it('refuses a body whose content-length exceeds the cap', async () => {
      const error = await upstreamError(new GuardedFetcher(OPTIONS).getJson(`${server.origin}/large`));
      expect(error.message).toContain('exceeds 1024 bytes');
    });

    it('honours a per-call maxBytes', async () => {
      const fetcher = new GuardedFetcher({ ...OPTIONS, maxResponseBytes: 1_000_000 });
      await expect(fetcher.getJson(`${server.origin}/large`)).resolves.toMatchObject({ pad: expect.any(String) });
      const error = await upstreamError(fetcher.getJson(`${server.origin}/large`, { maxBytes: 100 }));
      expect(error.message).toContain('exceeds 100 bytes');
    });

    it('stops reading a chunked body without content-length at the cap', async () => {
      const error = await upstreamError(new GuardedFetcher(OPTIONS).getJson(`${server.origin}/endless`));
      expect(error.message).toContain('exceeds 1024 bytes');
    });
  });

  describe('time limit', () => {
    it('gives up on a server that never answers', async () => {
      const error = await upstreamError(new GuardedFetcher({ ...OPTIONS, timeoutMs: 200 }).getJson(`${server.origin}/hang`));
      expect(error.message).toContain('failed');
    });

    it('gives up on a body that never finishes', async () => {
      await upstreamError(new GuardedFetcher({ ...OPTIONS, timeoutMs: 200 }).getJson(`${server.origin}/stall-body`));
    });

    it('honours a per-call timeoutMs', async () => {
      await upstreamError(new GuardedFetcher(OPTIONS).getJson(`${server.origin}/hang`, { timeoutMs: 200 }));
    });

    it("honours the caller's abort signal", async () => {
      const controller = new AbortController();
      const pending = new GuardedFetcher(OPTIONS).getJson(`${server.origin}/hang`, { signal: controller.signal });
      controller.abort();
      await upstreamError(pending);
    });
  });
});
