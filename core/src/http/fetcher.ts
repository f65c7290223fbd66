import { lookup as dnsLookup } from 'node:dns/promises';
import type { LookupAddress } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';
import { Agent, fetch, type Response } from 'undici';
import { SpanKind, type Span } from '@opentelemetry/api';
import { UpstreamError, type FetchJsonOptions, type HttpFetcher } from '@tessera/plugin-sdk';
import { inSpan } from '../telemetry/tracing.js';

export interface GuardedFetcherOptions {
  /** Also lets https reach loopback: development and tests only. */
  readonly allowLoopbackHttp: boolean;
  /** CIDR ranges exempt from the private-address refusal (never loopback or unspecified). */
  readonly allowPrivateNetworks?: readonly string[];
  readonly timeoutMs: number;
  readonly maxResponseBytes: number;
}

/** Every address a hostname resolves to. The default asks the OS resolver; tests inject their own. */
export type Resolver = (hostname: string) => Promise<readonly LookupAddress[]>;

const systemResolver: Resolver = (hostname) => dnsLookup(hostname, { all: true });

type Address = ipaddr.IPv4 | ipaddr.IPv6;
type Range = [Address, number];

const cidr = (range: string): Range => ipaddr.parseCIDR(range);

// Anything not listed is public. First match names the category.
const V4_RANGES: readonly (readonly [Range, string])[] = (
  [
    ['0.0.0.0/8', 'unspecified'], // "this network": connecting to 0.0.0.0 reaches the local host
    ['10.0.0.0/8', 'private'],
    ['100.64.0.0/10', 'carrier-grade NAT'],
    ['127.0.0.0/8', 'loopback'],
    ['169.254.0.0/16', 'link-local'], // cloud metadata at 169.254.169.254
    ['172.16.0.0/12', 'private'],
    ['192.0.0.0/24', 'reserved'],
    ['192.0.2.0/24', 'documentation'],
    ['192.88.99.0/24', 'reserved'],
    ['192.168.0.0/16', 'private'],
    ['198.18.0.0/15', 'benchmarking'],
    ['198.51.100.0/24', 'documentation'],
    ['203.0.113.0/24', 'documentation'],
    ['224.0.0.0/4', 'multicast'],
    ['240.0.0.0/4', 'reserved'], // includes broadcast 255.255.255.255
  ] as const
).map(([range, category]) => [cidr(range), category] as const);

const V6_RANGES: readonly (readonly [Range, string])[] = (
  [
    ['::/128', 'unspecified'],
    ['::1/128', 'loopback'],
    ['64:ff9b:1::/48', 'private'], // local-use NAT64 (RFC 8215)
    ['100::/64', 'reserved'],
    ['2001:2::/48', 'benchmarking'],
    ['2001:db8::/32', 'documentation'],
    ['2001::/23', 'reserved'], // IETF protocol assignments, Teredo (its embedded IPv4 is obfuscated)
    ['3fff::/20', 'documentation'],
    ['fc00::/7', 'unique-local'],
    ['fe80::/10', 'link-local'],
    ['fec0::/10', 'site-local'],
    ['ff00::/8', 'multicast'],
  ] as const
).map(([range, category]) => [cidr(range), category] as const);

const GLOBAL_UNICAST_V6 = cidr('2000::/3');
const NAT64 = cidr('64:ff9b::/96');
const SIX_TO_FOUR = cidr('2002::/16');

interface Classified {
  /** The address judged: the embedded IPv4 of a mapped, NAT64 or 6to4 address, else the address itself. */
  readonly address: Address;
  /** `public`, or the reason it is not: `loopback`, `private`, `link-local`… */
  readonly category: string;
}

/**
 * `public`, or the special-purpose range an address falls in. An IPv6 address that embeds an IPv4 one
 * (mapped, NAT64, 6to4) is judged by that IPv4: it is where the packets end up.
 */
export function classifyAddress(text: string): Classified {
  const parsed = ipaddr.parse(text);
  if (parsed.kind() === 'ipv4') return classifyV4(parsed as ipaddr.IPv4);
  const v6 = parsed as ipaddr.IPv6;
  if (v6.isIPv4MappedAddress()) return classifyV4(v6.toIPv4Address());
  if (v6.match(NAT64)) return classifyV4(v4From(v6.parts[6]!, v6.parts[7]!));
  if (v6.match(SIX_TO_FOUR)) return classifyV4(v4From(v6.parts[1]!, v6.parts[2]!));
  const listed = V6_RANGES.find(([range]) => v6.match(range));
  if (listed) return { address: v6, category: listed[1] };
  // Outside 2000::/3 nothing is assigned for global unicast; IPv4-compatible ::a.b.c.d lands here too.
  return { address: v6, category: v6.match(GLOBAL_UNICAST_V6) ? 'public' : 'reserved' };
}

function classifyV4(v4: ipaddr.IPv4): Classified {
  return { address: v4, category: V4_RANGES.find(([range]) => v4.match(range))?.[1] ?? 'public' };
}

function v4From(high: number, low: number): ipaddr.IPv4 {
  return new ipaddr.IPv4([high >> 8, high & 0xff, low >> 8, low & 0xff]);
}

/** An IPv4-mapped range (::ffff:10.0.0.0/104) is written as IPv4, since mapped addresses are judged as IPv4. */
function parseAllowedRange(text: string): Range {
  if (!ipaddr.isValidCIDR(text)) throw new TypeError(`network.allowPrivateNetworks: ${JSON.stringify(text)} is not a CIDR range`);
  const [address, bits] = ipaddr.parseCIDR(text);
  if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
    return [(address as ipaddr.IPv6).toIPv4Address(), bits - 96];
  }
  return [address, bits];
}

/** Which addresses a fetch may reach; the fetcher applies it to IP-literal hosts and to every resolved address. */
export class AddressPolicy {
  readonly #allowLoopback: boolean;
  readonly #allowed: readonly Range[];

  constructor(options: Pick<GuardedFetcherOptions, 'allowLoopbackHttp' | 'allowPrivateNetworks'>) {
    this.#allowLoopback = options.allowLoopbackHttp;
    this.#allowed = (options.allowPrivateNetworks ?? []).map(parseAllowedRange);
  }

  /** Why `text` may not be reached over `protocol` (`https:` or `http:`), completing "<address> …"; undefined if it may. */
  refusal(text: string, protocol: string): string | undefined {
    if (isIP(text) === 0) return 'is not an IP address'; // canonical forms only: ipaddr.js also reads 127.1
    const { address, category } = classifyAddress(text);
    if (category === 'loopback') return this.#allowLoopback ? undefined : 'is loopback, allowed only with network.allowLoopbackHttp';
    if (category === 'unspecified') return 'is unspecified (it reaches this host)';
    if (protocol !== 'https:') return 'is not loopback, and plain http is allowed only to loopback: https required';
    if (category === 'public') return undefined;
    if (this.#allowed.some((range) => range[0].kind() === address.kind() && address.match(range))) return undefined;
    return `is not public (${category}) and not in network.allowPrivateNetworks`;
  }
}

/**
 * The only way plugins reach the network. URLs come from operator config and from discovery documents
 * (`jwks_uri`), so every fetch is HTTPS (plain HTTP only to loopback, when allowed), follows no redirect
 * (a redirect could leave the configured host), is capped in time and size, and reaches only public
 * addresses unless the operator exempted a range: otherwise a wrong or hostile URL could make the broker
 * probe its own network or read cloud metadata (SSRF).
 */
export class GuardedFetcher implements HttpFetcher {
  readonly #policy: AddressPolicy;
  // One dispatcher per scheme: plain HTTP may reach loopback only, whatever else is exempted.
  readonly #https: Agent;
  readonly #http: Agent;

  constructor(
    private readonly options: GuardedFetcherOptions,
    private readonly resolve: Resolver = systemResolver,
  ) {
    this.#policy = new AddressPolicy(options);
    this.#https = new Agent({ connect: { lookup: this.#lookup('https:') } });
    this.#http = new Agent({ connect: { lookup: this.#lookup('http:') } });
  }

  /** Drops every connection, in flight or pooled: a stopping broker must not wait out a slow upstream. */
  async close(): Promise<void> {
    await Promise.all([this.#https.destroy(), this.#http.destroy()]);
  }

  async getJson(target: string, options: FetchJsonOptions = {}): Promise<unknown> {
    const url = this.#checkUrl(target);
    // url.full without query or fragment: a discovery document may put anything there.
    const attributes = {
      'http.request.method': 'GET',
      'url.full': `${url.origin}${url.pathname}`,
      'server.address': url.hostname,
      'server.port': Number(url.port || (url.protocol === 'https:' ? 443 : 80)),
    };
    return inSpan('GET', attributes, (span) => this.#getJson(url, options, span), SpanKind.CLIENT);
  }

  async #getJson(url: URL, options: FetchJsonOptions, span: Span): Promise<unknown> {
    const maxBytes = options.maxBytes ?? this.options.maxResponseBytes;
    const timeout = AbortSignal.timeout(options.timeoutMs ?? this.options.timeoutMs);
    const signal = options.signal ? AbortSignal.any([timeout, options.signal]) : timeout;
    const dispatcher = url.protocol === 'https:' ? this.#https : this.#http;
    let response: Response;
    try {
      response = await fetch(url, { redirect: 'manual', signal, dispatcher, headers: { accept: 'application/json' } });
    } catch (cause) {
      throw refusalIn(cause) ?? new UpstreamError(`fetch ${url.origin} failed`, { cause });
    }
    span.setAttribute('http.response.status_code', response.status);
    if (response.status !== 200) {
      await response.body?.cancel().catch(() => undefined);
      throw new UpstreamError(`fetch ${url.origin} answered HTTP ${response.status}`);
    }
    const text = await readCapped(response, maxBytes, url);
    try {
      return JSON.parse(text) as unknown;
    } catch (cause) {
      throw new UpstreamError(`fetch ${url.origin} returned invalid JSON`, { cause });
    }
  }

  #checkUrl(target: string): URL {
    if (!URL.canParse(target)) throw new UpstreamError('not an absolute URL');
    const url = new URL(target);
    if (url.username || url.password) throw new UpstreamError('URL carries credentials');
    const plain = url.protocol === 'http:';
    if (url.protocol !== 'https:' && !(plain && this.options.allowLoopbackHttp)) {
      throw new UpstreamError(`refusing ${url.protocol.slice(0, -1)} fetch to ${url.host}: https required`);
    }
    // The OS never resolves an IP literal (no lookup runs), so it is judged here; hostnames at connect time.
    const literal = url.hostname.replace(/^\[(.*)\]$/, '$1');
    if (isIP(literal)) this.#judge(url.protocol, url.hostname, literal);
    return url;
  }

  /**
   * Resolves once, judges every address, and hands the connection exactly those: no second lookup that a
   * rebinding DNS server could answer differently. TLS still verifies the certificate against the hostname.
   */
  #lookup(protocol: string): LookupFunction {
    return (hostname, options, callback) => {
      this.resolve(hostname).then(
        (addresses) => {
          let usable: readonly LookupAddress[];
          try {
            if (addresses.length === 0) throw new UpstreamError(`fetch to ${hostname} failed: no address`);
            // Any one refused address refuses the host: the OS, not us, would pick which one to use.
            for (const { address } of addresses) this.#judge(protocol, hostname, address);
            const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : options.family;
            usable = family ? addresses.filter((a) => a.family === family) : addresses;
            if (usable.length === 0) throw new UpstreamError(`fetch to ${hostname} failed: no IPv${family} address`);
          } catch (error) {
            return callback(error as Error, '');
          }
          if (options.all) callback(null, [...usable]);
          else callback(null, usable[0]!.address, usable[0]!.family);
        },
        (error: unknown) => callback(error as Error, ''),
      );
    };
  }

  #judge(protocol: string, host: string, address: string): void {
    const why = this.#policy.refusal(address, protocol);
    if (why) throw new UpstreamError(`refusing ${protocol.slice(0, -1)} fetch to ${host}: ${address} ${why}`);
  }
}

/** A refusal raised inside the connect-time lookup, surfaced as is rather than as a generic failure. */
function refusalIn(error: unknown): UpstreamError | undefined {
  for (let cause = error, depth = 0; cause instanceof Error && depth < 5; cause = cause.cause, depth += 1) {
    if (cause instanceof UpstreamError) return cause;
  }
  return undefined;
}

async function readCapped(response: Response, maxBytes: number, url: URL): Promise<string> {
  const declared = Number(response.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw new UpstreamError(`response from ${url.origin} exceeds ${maxBytes} bytes`);
  }
  if (!response.body) return '';
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for await (const chunk of response.body) {
      total += chunk.byteLength;
      if (total > maxBytes) {
        await response.body.cancel().catch(() => undefined);
        throw new UpstreamError(`response from ${url.origin} exceeds ${maxBytes} bytes`);
      }
      chunks.push(chunk);
    }
  } catch (error) {
    if (error instanceof UpstreamError) throw error;
    throw new UpstreamError(`reading ${url.origin} failed`, { cause: error });
  }
  return Buffer.concat(chunks).toString('utf8');
}
