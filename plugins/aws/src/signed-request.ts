import { z } from 'zod';
import { InvalidToken } from '@tessera/plugin-sdk';
import type { StsEndpoint } from './config.js';

/**
 * The subject token: base64url (no padding) of this JSON object, the same four items as Vault's
 * `iam_http_request_method`, `iam_request_url`, `iam_request_headers` and `iam_request_body`:
 *
 * ```json
 * { "method": "POST", "url": "https://sts.amazonaws.com/",
 *   "headers": { "authorization": "AWS4-HMAC-SHA256 Credential=…", "x-amz-date": "…", … },
 *   "body": "Action=GetCallerIdentity&Version=2011-06-15" }
 * ```
 * Header values are strings; a one-element array is accepted for Vault-style clients.
 */
export interface SignedRequestEnvelope {
  readonly method: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string | readonly string[]>>;
  readonly body: string;
}

/** A proof that passed every check the broker can make without STS. */
export interface CheckedProof {
  /** The allow-listed endpoint it was signed for; the only place it is sent. */
  readonly endpoint: StsEndpoint;
  /** Headers to send, lower-case names. `host` and `content-length` are left to the HTTP client, which derives the same values. */
  readonly headers: ReadonlyMap<string, string>;
  readonly body: string;
  readonly signedAt: Date;
  /** The audience header's value: one of the accepted audiences. */
  readonly audience: string;
  /** SigV4 signature (hex): unique per signed request, the replay key. */
  readonly signature: string;
}

export interface ProofCheckOptions {
  readonly endpoints: ReadonlyMap<string, StsEndpoint>;
  readonly audienceHeader: string;
  readonly audiences: ReadonlySet<string>;
  readonly maxAgeSeconds: number;
  readonly clockSkewSeconds: number;
  readonly maxTokenBytes: number;
  readonly now: Date;
}

const envelopeSchema = z
  .object({
    method: z.string(),
    url: z.string().max(512),
    headers: z.record(z.string(), z.union([z.string(), z.array(z.string())])),
    body: z.string().max(256),
  })
  .strict();

/** The only request STS may be sent: exactly these two parameters (Vault: no other keys, Action once). */
const ACTION = 'GetCallerIdentity';
const API_VERSION = '2011-06-15';

/** Headers a SigV4-signing client sends with GetCallerIdentity. Anything else is refused, not forwarded. */
const FORWARDED_HEADERS = new Set([
  'authorization',
  'content-type',
  'x-amz-date',
  'x-amz-security-token',
  'x-amz-content-sha256',
  'x-amz-user-agent',
  'user-agent',
  'amz-sdk-invocation-id',
  'amz-sdk-request',
]);
/** Checked against the URL and body, then left to the HTTP client (it derives identical values). */
const DERIVED_HEADERS = new Set(['host', 'content-length']);
/** RFC 9110 §7.6.1 connection-specific headers, plus `expect`: they steer the hop to STS, never the request. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect']);

const BASE64URL = /^[A-Za-z0-9_-]+$/;
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$/;
const HEADER_VALUE = /^[\x20-\x7e]{0,8192}$/;
const FORM_CONTENT_TYPE = /^application\/x-www-form-urlencoded( *; *charset=utf-8)?$/i;
const AMZ_DATE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;
// SigV4 header-signed request; SigV4a and presigned (query) forms are not accepted.
const AUTHORIZATION =
  /^AWS4-HMAC-SHA256 Credential=([A-Z0-9]{16,128})\/(\d{8})\/([a-z0-9-]{1,32})\/([a-z0-9-]{1,32})\/aws4_request, ?SignedHeaders=([a-z0-9;-]{1,1024}), ?Signature=([0-9a-f]{64})$/;

/**
 * Decodes the subject token and makes every check that does not need STS: allow-listed endpoint, POST
 * of exactly `Action=GetCallerIdentity&Version=2011-06-15`, header allow-list with no duplicates or
 * hop-by-hop headers, `Host` matching the endpoint, the audience header signed and naming this broker,
 * and a fresh `X-Amz-Date`. STS checks the signature itself.
 */
export function checkProof(token: string, options: ProofCheckOptions): CheckedProof {
  const envelope = decodeEnvelope(token, options.maxTokenBytes);
  if (envelope.method !== 'POST') throw new InvalidToken('malformed', 'method must be POST');

  const endpoint = endpointOf(envelope.url, options.endpoints);
  const { forwarded, host, contentLength } = collectHeaders(envelope.headers, options.audienceHeader);

  // Exact: SigV4 signs the value as sent, and the HTTP client will send the endpoint's own spelling.
  if (host !== undefined && host !== endpoint.host) throw new InvalidToken('malformed', 'host header does not match the url');
  if (contentLength !== undefined && contentLength !== String(Buffer.byteLength(envelope.body))) throw new InvalidToken('malformed', 'content-length does not match the body');
  if (!FORM_CONTENT_TYPE.test(forwarded.get('content-type') ?? '')) throw new InvalidToken('malformed', 'content-type must be application/x-www-form-urlencoded');
  checkBody(envelope.body);

  const authorization = AUTHORIZATION.exec(forwarded.get('authorization') ?? '');
  if (!authorization) throw new InvalidToken('malformed', 'authorization is not a SigV4 (AWS4-HMAC-SHA256) header');
  const [, , scopeDate, scopeRegion, scopeService, signedHeaderList, signature] = authorization as unknown as [string, string, string, string, string, string, string];
  if (scopeService !== 'sts') throw new InvalidToken('signature', 'credential scope is not sts');
  if (scopeRegion !== endpoint.region) throw new InvalidToken('signature', 'credential scope region does not match the endpoint');

  const signedHeaders = signedHeaderNames(signedHeaderList, forwarded);
  // Unsigned, these could be swapped by whoever holds the proof; signed, STS refuses any change.
  for (const required of ['host', 'x-amz-date', options.audienceHeader]) {
    if (!signedHeaders.has(required)) throw new InvalidToken(required === options.audienceHeader ? 'audience' : 'signature', `${required} is not signed`);
  }

  const audience = forwarded.get(options.audienceHeader);
  if (audience === undefined || !options.audiences.has(audience)) throw new InvalidToken('audience', `${options.audienceHeader} does not name this broker`);

  const amzDate = forwarded.get('x-amz-date') ?? '';
  const signedAt = parseAmzDate(amzDate);
  if (signedAt === undefined) throw new InvalidToken('malformed', 'x-amz-date');
  if (amzDate.slice(0, 8) !== scopeDate) throw new InvalidToken('signature', 'credential scope date does not match x-amz-date');
  const now = options.now.getTime();
  if (signedAt.getTime() > now + options.clockSkewSeconds * 1000) throw new InvalidToken('not_yet_valid', 'x-amz-date in the future');
  if (now - signedAt.getTime() > options.maxAgeSeconds * 1000) throw new InvalidToken('expired', 'x-amz-date too old');

  return { endpoint, headers: forwarded, body: envelope.body, signedAt, audience, signature };
}

function decodeEnvelope(token: string, maxTokenBytes: number): SignedRequestEnvelope {
  if (token.length > maxTokenBytes) throw new InvalidToken('too_large', 'subject token too large');
  if (!BASE64URL.test(token) || token.length % 4 === 1) throw new InvalidToken('malformed', 'not base64url');
  const bytes = Buffer.from(token, 'base64url');
  // Canonical encoding only: one proof has one spelling (it is also the replay and audit handle).
  if (bytes.toString('base64url') !== token) throw new InvalidToken('malformed', 'not canonical base64url');
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new InvalidToken('malformed', 'not a JSON signed request');
  }
  const parsed = envelopeSchema.safeParse(json);
  if (!parsed.success) throw new InvalidToken('malformed', 'signed request must be {method, url, headers, body}');
  return parsed.data;
}

/** The endpoint the URL names, if the config allows it. The URL must be exactly `<origin>/`. */
function endpointOf(raw: string, endpoints: ReadonlyMap<string, StsEndpoint>): StsEndpoint {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new InvalidToken('malformed', 'url');
  }
  // Spelled exactly as the origin plus `/`: no query (a second Action), no userinfo, no case or port
  // games that a different URL parser might read as another host.
  const endpoint = endpoints.get(url.origin);
  if (endpoint === undefined) throw new InvalidToken('untrusted_issuer', 'url is not an allowed STS endpoint');
  if (raw !== `${url.origin}/`) throw new InvalidToken('malformed', 'url must be the endpoint origin followed by /');
  return endpoint;
}

function collectHeaders(raw: SignedRequestEnvelope['headers'], audienceHeader: string): { forwarded: Map<string, string>; host?: string; contentLength?: string } {
  const forwarded = new Map<string, string>();
  const derived = new Map<string, string>();
  // Details name a header only when it is one we know: names are client input and stay out of logs.
  const known = (name: string) => (FORWARDED_HEADERS.has(name) || DERIVED_HEADERS.has(name) || HOP_BY_HOP.has(name) || name === audienceHeader ? name : 'unknown');
  for (const [rawName, rawValue] of Object.entries(raw)) {
    if (!HEADER_NAME.test(rawName)) throw new InvalidToken('malformed', 'header name');
    const name = rawName.toLowerCase();
    if (forwarded.has(name) || derived.has(name) || (Array.isArray(rawValue) && rawValue.length !== 1)) {
      throw new InvalidToken('malformed', `duplicate header ${known(name)}`);
    }
    const value = Array.isArray(rawValue) ? (rawValue[0] as string) : (rawValue as string);
    if (!HEADER_VALUE.test(value)) throw new InvalidToken('malformed', `header value ${known(name)}`);
    if (HOP_BY_HOP.has(name)) throw new InvalidToken('malformed', `hop-by-hop header ${name}`);
    if (DERIVED_HEADERS.has(name)) derived.set(name, value);
    else if (FORWARDED_HEADERS.has(name) || name === audienceHeader) forwarded.set(name, value);
    else throw new InvalidToken('malformed', 'header not allowed');
  }
  return { forwarded, host: derived.get('host'), contentLength: derived.get('content-length') };
}

/** SignedHeaders: sorted, unique, each present in the request (`host` always is: it comes from the URL). */
function signedHeaderNames(list: string, headers: ReadonlyMap<string, string>): Set<string> {
  const names = list.split(';');
  const signed = new Set<string>();
  let previous = '';
  for (const name of names) {
    if (name === '' || name <= previous) throw new InvalidToken('malformed', 'SignedHeaders not sorted and unique');
    if (name !== 'host' && name !== 'content-length' && !headers.has(name)) throw new InvalidToken('malformed', 'a signed header is missing');
    signed.add(name);
    previous = name;
  }
  return signed;
}

function checkBody(body: string): void {
  const seen = new Map<string, string>();
  for (const pair of body.split('&')) {
    const match = /^(Action|Version)=([A-Za-z0-9-]+)$/.exec(pair);
    if (!match) throw new InvalidToken('malformed', 'body must be Action=GetCallerIdentity&Version=2011-06-15 only');
    const [, key, value] = match as unknown as [string, string, string];
    if (seen.has(key)) throw new InvalidToken('malformed', `body repeats ${key}`);
    seen.set(key, value);
  }
  if (seen.get('Action') !== ACTION) throw new InvalidToken('malformed', 'body Action must be GetCallerIdentity');
  if (seen.get('Version') !== API_VERSION) throw new InvalidToken('malformed', 'body Version must be 2011-06-15');
}

/** `YYYYMMDD'T'HHMMSS'Z'` (SigV4 basic ISO 8601), rejecting dates that do not exist. */
function parseAmzDate(value: string): Date | undefined {
  const match = AMZ_DATE.exec(value);
  if (!match) return undefined;
  const [year, month, day, hour, minute, second] = match.slice(1).map(Number) as [number, number, number, number, number, number];
  const date = new Date(Date.UTC(year, month - 1, day, hour, minute, second));
  const roundTrip = date.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  return roundTrip === value ? date : undefined;
}
