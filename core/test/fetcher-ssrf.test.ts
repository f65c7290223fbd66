import { networkInterfaces } from 'node:os';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { UpstreamError } from '@tessera/plugin-sdk';
import { AddressPolicy, classifyAddress, GuardedFetcher, type GuardedFetcherOptions, type Resolver } from '../src/http/fetcher.js';
import { startLoopbackServer, type LoopbackServer } from './support/loopback.js';

const STRICT: GuardedFetcherOptions = { allowLoopbackHttp: false, timeoutMs: 2_000, maxResponseBytes: 1_024 };
const DEV: GuardedFetcherOptions = { ...STRICT, allowLoopbackHttp: true };
const PUBLIC = '93.184.215.14';

/** Answers every hostname with `addresses` (a fake DNS at the process edge) and counts the lookups. */
function resolver(...addresses: string[]): Resolver & { readonly calls: string[] } {
  const calls: string[] = [];
  const resolve = async (hostname: string) => {
    calls.push(hostname);
    return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
  return Object.assign(resolve, { calls });
}

async function refusal(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(UpstreamError);
  return (error as UpstreamError).message;
}

/**
 * A TLS listener with no certificate: it records the SNI of each ClientHello and fails the handshake. Seeing
 * a name proves a connection reached this address and that SNI carried the URL's hostname.
 */
async function startSniRecorder(host: string): Promise<{ port: number; names: string[]; close(): Promise<void> }> {
  const names: string[] = [];
  const server: TlsServer = createTlsServer({
    SNICallback: (name, callback) => {
      names.push(name);
      callback(new Error('no certificate in this test'));
    },
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return {
    port: (server.address() as AddressInfo).port,
    names,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

let server: LoopbackServer;

beforeEach(async () => {
  server = await startLoopbackServer((_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end('{"ok":true}');
  });
});

afterEach(async () => {
  await server.close();
});

describe('classifyAddress', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.0.9', 'loopback'],
    ['::1', 'loopback'],
    ['0.0.0.0', 'unspecified'],
    ['::', 'unspecified'],
    ['10.0.0.1', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'carrier-grade NAT'],
    ['169.254.169.254', 'link-local'],
    ['fe80::1', 'link-local'],
    ['fd00::1', 'unique-local'],
    ['fc00::1', 'unique-local'],
    ['224.0.0.1', 'multicast'],
    ['ff02::1', 'multicast'],
    ['255.255.255.255', 'reserved'],
    ['240.0.0.1', 'reserved'],
    ['192.0.2.1', 'documentation'],
    ['2001:db8::1', 'documentation'],
    ['198.18.0.1', 'benchmarking'],
    ['2001::1', 'reserved'], // Teredo
    ['::7f00:1', 'reserved'], // IPv4-compatible
    ['100::1', 'reserved'],
    // Embedded IPv4 is judged as IPv4.
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:a9fe:a9fe', 'link-local'],
    ['64:ff9b::a9fe:a9fe', 'link-local'], // NAT64
    ['2002:a00:1::1', 'private'], // 6to4 of 10.0.0.1
    ['2002:5db8:d70e::1', 'public'], // 6to4 of a public address
    ['::ffff:93.184.215.14', 'public'],
    // Public.
    [PUBLIC, 'public'],
    ['172.32.0.1', 'public'],
    ['2606:4700::1111', 'public'],
  ])('%s is %s', (address, category) => {
    expect(classifyAddress(address).category).toBe(category);
  });
});

describe('AddressPolicy', () => {
  const policy = new AddressPolicy({ allowLoopbackHttp: false, allowPrivateNetworks: ['10.0.4.0/24', 'fd00:4::/64', '::ffff:192.168.7.0/120'] });

  it.each(['10.0.4.7', '10.0.4.255', '::ffff:10.0.4.7', '64:ff9b::a00:407', 'fd00:4::1', '192.168.7.9', PUBLIC])('lets %s through', (address) => {
    expect(policy.refusal(address, 'https:')).toBeUndefined();
  });

  it.each([
    ['10.0.5.1', 'is not public (private) and not in network.allowPrivateNetworks'],
    ['fd00:5::1', 'is not public (unique-local) and not in network.allowPrivateNetworks'],
    ['169.254.169.254', 'is not public (link-local) and not in network.allowPrivateNetworks'],
    ['127.0.0.1', 'is loopback, allowed only with network.allowLoopbackHttp'],
    ['not-an-ip', 'is not an IP address'],
  ])('refuses %s', (address, why) => {
    expect(policy.refusal(address, 'https:')).toBe(why);
  });

  it('never exempts loopback or unspecified through ranges', () => {
    const wide = new AddressPolicy({ allowLoopbackHttp: false, allowPrivateNetworks: ['0.0.0.0/0', '::/0'] });
    expect(wide.refusal('127.0.0.1', 'https:')).toContain('loopback');
    expect(wide.refusal('::1', 'https:')).toContain('loopback');
    expect(wide.refusal('0.0.0.0', 'https:')).toContain('unspecified');
    expect(wide.refusal('::', 'https:')).toContain('unspecified');
  });

  it('allows plain http to loopback only, and only with allowLoopbackHttp', () => {
    const dev = new AddressPolicy({ allowLoopbackHttp: true, allowPrivateNetworks: ['10.0.4.0/24'] });
    expect(dev.refusal('127.0.0.1', 'http:')).toBeUndefined();
    expect(dev.refusal('::1', 'https:')).toBeUndefined();
    expect(dev.refusal('10.0.4.7', 'http:')).toContain('https required');
    expect(dev.refusal(PUBLIC, 'http:')).toContain('https required');
  });
});

describe('GuardedFetcher SSRF guard', () => {
  describe('IP-literal hosts are judged before anything is sent', () => {
    it.each([
      ['https://169.254.169.254/latest/meta-data/', 'link-local'],
      ['https://10.0.0.1/jwks', 'private'],
      ['https://[fd00::1]/jwks', 'unique-local'],
      ['https://[fe80::1]/jwks', 'link-local'],
      ['https://[::ffff:127.0.0.1]/jwks', 'loopback'],
      ['https://[::ffff:169.254.169.254]/jwks', 'link-local'],
      ['https://0.0.0.0/jwks', 'unspecified'],
      ['https://0x7f.1/jwks', 'loopback'], // the URL parser normalizes to 127.0.0.1
      ['https://2130706433/jwks', 'loopback'],
      ['https://224.0.0.1/jwks', 'multicast'],
    ])('refuses %s (%s)', async (target, category) => {
      const dns = resolver(PUBLIC);
      const message = await refusal(new GuardedFetcher(STRICT, dns).getJson(target));
      expect(message).toMatch(/^refusing https fetch to \S+: /);
      expect(message).toContain(category === 'loopback' || category === 'unspecified' ? `is ${category}` : `(${category})`);
      expect(message).toContain(new URL(target).hostname);
      expect(dns.calls).toEqual([]);
    });

    it('refuses 0.0.0.0 even with allowLoopbackHttp and every range exempted', async () => {
      const fetcher = new GuardedFetcher({ ...DEV, allowPrivateNetworks: ['0.0.0.0/0'] });
      const port = new URL(server.origin).port;
      expect(await refusal(fetcher.getJson(`http://0.0.0.0:${port}/ok`))).toContain('unspecified');
      expect(server.requests).toEqual([]);
    });
  });

  describe('loopback', () => {
    it('is refused when allowLoopbackHttp is false, over https and through a name too', async () => {
      const port = new URL(server.origin).port;
      const message = await refusal(new GuardedFetcher(STRICT, resolver('127.0.0.1')).getJson(`https://localhost:${port}/ok`));
      expect(message).toBe('refusing https fetch to localhost: 127.0.0.1 is loopback, allowed only with network.allowLoopbackHttp');
      expect(server.requests).toEqual([]);
    });

    it('is reached with allowLoopbackHttp', async () => {
      await expect(new GuardedFetcher(DEV).getJson(`${server.origin}/ok`)).resolves.toEqual({ ok: true });
      expect(server.requests).toEqual(['/ok']);
    });

    it('allowPrivateNetworks cannot exempt it', async () => {
      const fetcher = new GuardedFetcher({ ...STRICT, allowPrivateNetworks: ['127.0.0.0/8'] }, resolver('127.0.0.1'));
      const port = new URL(server.origin).port;
      expect(await refusal(fetcher.getJson(`https://idp.test:${port}/ok`))).toContain('127.0.0.1 is loopback');
    });
  });

  describe('resolved addresses', () => {
    it.each([
      ['169.254.169.254', 'link-local'],
      ['10.0.0.1', 'private'],
      ['::ffff:127.0.0.1', 'loopback'],
      ['fd00::1', 'unique-local'],
      ['100.64.1.2', 'carrier-grade NAT'],
    ])('refuses a hostname that resolves to %s (%s)', async (address, category) => {
      const dns = resolver(address);
      const message = await refusal(new GuardedFetcher(STRICT, dns).getJson('https://jwks.attacker.test/keys'));
      expect(message).toBe(
        `refusing https fetch to jwks.attacker.test: ${address} ` +
          (category === 'loopback' ? 'is loopback, allowed only with network.allowLoopbackHttp' : `is not public (${category}) and not in network.allowPrivateNetworks`),
      );
      expect(dns.calls).toEqual(['jwks.attacker.test']);
    });

    it('refuses a hostname when any one of its addresses is private, whatever the order', async () => {
      for (const addresses of [[PUBLIC, '10.0.0.1'], ['10.0.0.1', PUBLIC]]) {
        const message = await refusal(new GuardedFetcher({ ...STRICT, timeoutMs: 500 }, resolver(...addresses)).getJson('https://idp.test/jwks'));
        expect(message).toContain('10.0.0.1 is not public (private)');
      }
    });

    it('refuses plain http to a name that resolves to a public address', async () => {
      const message = await refusal(new GuardedFetcher(DEV, resolver(PUBLIC)).getJson('http://idp.test/jwks'));
      expect(message).toContain('https required');
    });

    it('connects to the address it checked: a fake name resolved once reaches the loopback server', async () => {
      const dns = resolver('127.0.0.1');
      const port = new URL(server.origin).port;
      // `jwks.idp.invalid` cannot resolve through the OS: only the checked answer can lead here.
      await expect(new GuardedFetcher(DEV, dns).getJson(`http://jwks.idp.invalid:${port}/ok`)).resolves.toEqual({ ok: true });
      expect(server.requests).toEqual(['/ok']);
      expect(dns.calls).toEqual(['jwks.idp.invalid']);
    });

    it('keeps TLS on the hostname: SNI names the host, not the checked address', async () => {
      const tls = await startSniRecorder('127.0.0.1');
      try {
        const message = await refusal(new GuardedFetcher(DEV, resolver('127.0.0.1')).getJson(`https://jwks.idp.invalid:${tls.port}/keys`));
        expect(message).toContain('failed'); // the handshake, not the guard
        expect(tls.names).toEqual(['jwks.idp.invalid']);
      } finally {
        await tls.close();
      }
    });
  });

  describe('allowPrivateNetworks', () => {
    it('exempts a listed range and only that range', async () => {
      const fetcher = new GuardedFetcher({ ...STRICT, allowPrivateNetworks: ['10.0.4.0/24'] }, resolver('10.0.5.1'));
      expect(await refusal(fetcher.getJson('https://idp.internal.test/jwks'))).toContain('10.0.5.1 is not public (private)');
    });

    it('judges a NAT64 address by its IPv4 against a range written in mapped form', async () => {
      const fetcher = new GuardedFetcher({ ...STRICT, allowPrivateNetworks: ['::ffff:10.0.4.0/120'] }, resolver('64:ff9b::a00:501'));
      expect(await refusal(fetcher.getJson('https://idp.internal.test/jwks'))).toContain('64:ff9b::a00:501 is not public (private)');
    });

    it('rejects a malformed range at construction', () => {
      expect(() => new GuardedFetcher({ ...STRICT, allowPrivateNetworks: ['10.0.4.0'] })).toThrow(/not a CIDR range/);
    });

    // Real wire, no outside network: the host's own non-loopback address is local but not public.
    const local = Object.values(networkInterfaces())
      .flat()
      .find((info) => info && !info.internal && !info.address.startsWith('fe80:') && classifyAddress(info.address).category !== 'public');

    // Skipped only on a host with no non-loopback private address (a bare sandbox); CI machines have one.
    it.skipIf(!local)('lets a listed range through to a real listener, with SNI on the hostname', async () => {
      const address = local!.address;
      const tls = await startSniRecorder(address);
      // An IPv4 range written in mapped form covers the IPv4 address.
      const range = address.includes(':') ? `${address}/128` : `::ffff:${address}/128`;
      try {
        const target = `https://idp.internal.test:${tls.port}/jwks`;
        const refused = await refusal(new GuardedFetcher(STRICT, resolver(address)).getJson(target));
        expect(refused).toContain('not in network.allowPrivateNetworks');
        expect(tls.names).toEqual([]);

        const exempt = new GuardedFetcher({ ...STRICT, allowPrivateNetworks: [range] }, resolver(address));
        expect(await refusal(exempt.getJson(target))).toContain('failed'); // the handshake, not the guard
        expect(tls.names).toEqual(['idp.internal.test']);
      } finally {
        await tls.close();
      }
    });
  });
});
