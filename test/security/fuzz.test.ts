import { randomUUID, type webcrypto } from 'node:crypto';
import { resolve } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { accessTokenPlugin, allowRule, API, ASSERTION_TYPE, ID_TOKEN, JWT, JWT_BEARER, LoopbackIssuer, startBroker, TestClient, TOKEN_EXCHANGE, type RunningBroker, JWT_SVID } from '../e2e/support.js';
import { b64u, compact, lenientBytes } from './jws.js';
import { echoes, OAUTH_ERROR_CODES } from './oracle.js';

/**
 * Property-based fuzzing of the three front doors over real HTTP. Every case is one request; the default
 * size keeps CI fast, `TESSERA_FUZZ_RUNS=100000` runs a long campaign, `TESSERA_FUZZ_SEED` replays one.
 * Findings are collected rather than thrown at the first one, so a campaign reports all of them with the
 * request that produced each.
 */
const RUNS = Number(process.env.TESSERA_FUZZ_RUNS ?? 300);
const SEED = Number(process.env.TESSERA_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));

const DB = 'https://db.example.test';
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
/** Members of a successful answer that carry a credential, per door. */
const CREDENTIAL_MEMBERS = ['access_token', 'jwt_svid', 'refresh_token', 'id_token'];

type Door = 'form' | 'json' | 'spiffe';
/** `bearer` is the form door with the RFC 7523 JWT bearer grant; the others are token exchange. */
type Template = Door | 'bearer';
type Claims = Record<string, unknown>;

interface Signer {
  readonly alg: string;
  readonly key: webcrypto.CryptoKey;
  header(): Claims;
  claims(): Claims;
}

interface Request {
  readonly door: Door;
  /** What the case is, for the counts: `valid`, `mutation:<kind>`, `random-form`, `random-json`. */
  readonly kind: string;
  readonly contentType?: string;
  readonly authorization?: string;
  readonly body: Buffer;
  /** Token text sent; none of it may come back. */
  readonly tokens: readonly string[];
  readonly expectIssued: boolean;
  /** A mutation that decodes (leniently) to the very same header, payload and signature bytes. */
  readonly sameContent?: boolean;
  /** The client assertion a valid request spends, remembered once issued (for replay cases). */
  readonly spends?: string;
  readonly describe: string;
}

interface Finding {
  readonly problem: string;
  readonly kind: string;
  readonly door: Door;
  readonly status: number;
  readonly response: string;
  readonly request: string;
  readonly describe: string;
}

// ---------------------------------------------------------------------------------------------------
// Token mutations. Each is data chosen by fast-check and applied to tokens minted for the request, so a
// finding's report carries the exact request while the case still names what was done.

const B64_TRICKS = ['pad', 'std-alphabet', 'trailing-bits', 'whitespace', 'wrap'] as const;
const SEGMENT_OPS = ['swap-header-payload', 'swap-payload-signature', 'drop-signature', 'drop-signature-and-dot', 'extra-segment', 'foreign-signature', 'foreign-payload', 'empty-payload', 'double-dot', 'reverse'] as const;
const CLAIM_SWAPS: readonly [string, (claims: Claims) => unknown][] = [
  ['exp-string', (c) => ({ ...c, exp: String(c.exp) })],
  ['exp-null', (c) => ({ ...c, exp: null })],
  ['exp-missing', ({ exp: _exp, ...c }) => c],
  ['exp-far-future', (c) => ({ ...c, exp: (c.exp as number) + 10 * 365 * 86_400 })],
  ['aud-number', (c) => ({ ...c, aud: 42 })],
  ['aud-object', (c) => ({ ...c, aud: { 0: c.aud } })],
  ['aud-array-with-number', (c) => ({ ...c, aud: [c.aud, 42] })],
  ['aud-nested-array', (c) => ({ ...c, aud: [[c.aud]] })],
  ['aud-missing', ({ aud: _aud, ...c }) => c],
  ['sub-array', (c) => ({ ...c, sub: [c.sub] })],
  ['sub-number', (c) => ({ ...c, sub: 7 })],
  ['sub-empty', (c) => ({ ...c, sub: '' })],
  ['iss-array', (c) => ({ ...c, iss: [c.iss] })],
  ['iat-string', (c) => ({ ...c, iat: String(c.iat) })],
  ['iat-future', (c) => ({ ...c, iat: (c.iat as number) + 3_600 })],
  ['nbf-string', (c) => ({ ...c, nbf: 'now' })],
  ['jti-number', (c) => ({ ...c, jti: 12_345 })],
  ['payload-array', (c) => [c]],
  ['payload-string', (c) => JSON.stringify(c)],
];
/** Repeated members: which one a parser keeps decides what was signed (RFC 7515 §5.2, RFC 7519 §4). */
const DUPLICATES: readonly { readonly where: 'header' | 'payload'; readonly member: string; readonly value: (signer: Signer) => unknown; readonly first: boolean }[] = [
  { where: 'payload', member: 'sub', value: () => 'mallory', first: true },
  { where: 'payload', member: 'sub', value: () => 'mallory', first: false },
  { where: 'payload', member: 'aud', value: () => 'https://evil.example.test', first: true },
  { where: 'payload', member: 'iss', value: () => 'https://evil.example.test', first: false },
  { where: 'payload', member: 'exp', value: () => 1, first: true },
  { where: 'header', member: 'alg', value: () => 'none', first: true },
  { where: 'header', member: 'alg', value: () => 'none', first: false },
  { where: 'header', member: 'kid', value: () => 'bogus', first: true },
  { where: 'header', member: 'kid', value: () => 'bogus', first: false },
];

type TokenMutation =
  | { readonly kind: 'char'; readonly segment: number; readonly at: number; readonly char: number; readonly foreign: string | undefined }
  | { readonly kind: 'bit'; readonly segment: number; readonly bit: number }
  | { readonly kind: 'b64'; readonly segment: number; readonly trick: (typeof B64_TRICKS)[number]; readonly at: number; readonly bits: number }
  | { readonly kind: 'truncate'; readonly keep: number }
  | { readonly kind: 'segments'; readonly op: (typeof SEGMENT_OPS)[number] }
  | { readonly kind: 'claim-type'; readonly swap: number }
  | { readonly kind: 'duplicate'; readonly variant: number }
  | { readonly kind: 'alg-none' }
  | { readonly kind: 'crit' };

const tokenMutation: fc.Arbitrary<TokenMutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('char' as const), segment: fc.nat(2), at: fc.nat(), char: fc.nat(63), foreign: fc.option(fc.constantFrom('.', '=', '+', '/', ' ', '%', '\u00e9', '\u0000', '\uD800'), { nil: undefined, freq: 5 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('bit' as const), segment: fc.nat(2), bit: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('b64' as const), segment: fc.nat(2), trick: fc.constantFrom(...B64_TRICKS), at: fc.nat(), bits: fc.integer({ min: 1, max: 15 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), keep: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('segments' as const), op: fc.constantFrom(...SEGMENT_OPS) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('claim-type' as const), swap: fc.nat(CLAIM_SWAPS.length - 1) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('duplicate' as const), variant: fc.nat(DUPLICATES.length - 1) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'alg-none' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'crit' as const }) },
);

function describeMutation(mutation: TokenMutation): string {
  switch (mutation.kind) {
    case 'b64':
      return `b64:${mutation.trick}`;
    case 'segments':
      return `segments:${mutation.op}`;
    case 'claim-type':
      return `claim-type:${CLAIM_SWAPS[mutation.swap]![0]}`;
    case 'duplicate': {
      const duplicate = DUPLICATES[mutation.variant]!;
      return `duplicate:${duplicate.where}.${duplicate.member}:${duplicate.first ? 'first' : 'last'}`;
    }
    default:
      return mutation.kind;
  }
}

function sign(signer: Signer, header: Claims = signer.header(), claims: unknown = signer.claims()): Promise<string> {
  return compact(signer.alg, signer.key, JSON.stringify(header), JSON.stringify(claims));
}

/** Object text with `member` repeated, first or last (JSON.stringify cannot write that). */
function withDuplicate(object: Claims, member: string, value: unknown, first: boolean): string {
  const body = JSON.stringify(object).slice(1, -1);
  const extra = `${JSON.stringify(member)}:${JSON.stringify(value)}`;
  return first ? `{${extra},${body}}` : `{${body},${extra}}`;
}

function replaceAt(text: string, at: number, replacement: string): string {
  return text.slice(0, at) + replacement + text.slice(at + 1);
}

async function mutateToken(token: string, mutation: TokenMutation, signer: Signer): Promise<string> {
  const parts = token.split('.') as [string, string, string];
  const withSegment = (index: number, segment: string) => parts.map((part, i) => (i === index ? segment : part)).join('.');
  switch (mutation.kind) {
    case 'char': {
      const segment = parts[mutation.segment]!;
      const at = mutation.at % segment.length;
      let replacement = mutation.foreign ?? ALPHABET[mutation.char]!;
      if (replacement === segment[at]) replacement = ALPHABET[(mutation.char + 1) % 64]!;
      return withSegment(mutation.segment, replaceAt(segment, at, replacement));
    }
    case 'bit': {
      const bytes = Buffer.from(parts[mutation.segment]!, 'base64url');
      const bit = mutation.bit % (bytes.length * 8);
      bytes[bit >> 3] = bytes[bit >> 3]! ^ (1 << (bit & 7));
      return withSegment(mutation.segment, b64u(bytes));
    }
    case 'b64': {
      const segment = parts[mutation.segment]!;
      const unused = [0, 0, 4, 2][segment.length % 4]!;
      switch (mutation.trick) {
        case 'std-alphabet':
          if (/[-_]/.test(segment)) return withSegment(mutation.segment, segment.replaceAll('-', '+').replaceAll('_', '/'));
          return withSegment(mutation.segment, `${segment}=`);
        case 'trailing-bits': {
          if (unused === 0) return withSegment(mutation.segment, `${segment}==`);
          const last = ALPHABET.indexOf(segment.at(-1)!);
          const mask = (1 << unused) - 1;
          const bits = mutation.bits & mask || 1;
          return withSegment(mutation.segment, segment.slice(0, -1) + ALPHABET[(last & ~mask) | bits]);
        }
        case 'whitespace': {
          const at = mutation.at % (segment.length + 1);
          return withSegment(mutation.segment, segment.slice(0, at) + [' ', '\t', '\n', '\r', '\u00a0'][mutation.bits % 5] + segment.slice(at));
        }
        case 'wrap':
          return [' ', '\n', '\t', '\r\n'][mutation.bits % 4] + token + [' ', '\n', ''][mutation.at % 3];
        case 'pad':
          return withSegment(mutation.segment, segment + '='.repeat(1 + (mutation.bits % 2)));
      }
      break;
    }
    case 'truncate':
      return token.slice(0, mutation.keep % token.length);
    case 'segments': {
      const [header, payload, signature] = parts;
      switch (mutation.op) {
        case 'swap-header-payload':
          return `${payload}.${header}.${signature}`;
        case 'swap-payload-signature':
          return `${header}.${signature}.${payload}`;
        case 'drop-signature':
          return `${header}.${payload}.`;
        case 'drop-signature-and-dot':
          return `${header}.${payload}`;
        case 'extra-segment':
          return `${token}.${signature}`;
        case 'foreign-signature':
          return `${header}.${payload}.${(await sign(signer)).split('.')[2]}`;
        case 'foreign-payload':
          return `${header}.${(await sign(signer)).split('.')[1]}.${signature}`;
        case 'empty-payload':
          return `${header}..${signature}`;
        case 'double-dot':
          return `${header}..${payload}.${signature}`;
        case 'reverse':
          return `${signature}.${payload}.${header}`;
      }
      break;
    }
    case 'claim-type':
      return sign(signer, signer.header(), CLAIM_SWAPS[mutation.swap]![1](signer.claims()));
    case 'duplicate': {
      const duplicate = DUPLICATES[mutation.variant]!;
      const header = signer.header();
      const claims = signer.claims();
      const headerText = duplicate.where === 'header' ? withDuplicate(header, duplicate.member, duplicate.value(signer), duplicate.first) : JSON.stringify(header);
      const payloadText = duplicate.where === 'payload' ? withDuplicate(claims, duplicate.member, duplicate.value(signer), duplicate.first) : JSON.stringify(claims);
      return compact(signer.alg, signer.key, headerText, payloadText);
    }
    case 'alg-none':
      return `${b64u(JSON.stringify({ ...signer.header(), alg: 'none' }))}.${parts[1]}.`;
    case 'crit':
      return sign(signer, { ...signer.header(), crit: ['exp'] });
  }
  return token;
}

/** True when both tokens decode, segment by segment, to the same bytes (a respelling, not a change). */
function sameContent(a: string, b: string): boolean {
  const left = a.trim().split('.');
  const right = b.trim().split('.');
  return left.length === right.length && left.every((segment, index) => lenientBytes(segment).equals(lenientBytes(right[index]!)));
}

// ---------------------------------------------------------------------------------------------------
// Random requests: names and values a client should never send, encoded in ways parsers disagree on.

/** A value plus whether it is token-like text that must never come back (URNs and names may, in descriptions). */
interface Value {
  readonly text: string;
  /** Sent byte for byte (percent tricks, raw bytes); otherwise percent-encoded as WTF-8. */
  readonly raw: boolean;
  readonly secret: boolean;
}

const NAMES = [
  'grant_type', 'subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'requested_token_type', 'audience', 'resource',
  'scope', 'assertion', 'client_id', 'client_secret', 'client_assertion', 'client_assertion_type', 'token',
];
const TRICKY_NAMES = ['client%5Fid', 'client_id ', 'Client_Id', '__proto__', 'constructor', 'subject_token[]', 'audience%00', '', '\u0000', '\uD800', 'sc\u00f6pe'];
const VOCABULARY = [
  TOKEN_EXCHANGE, JWT_BEARER, 'client_credentials', ID_TOKEN, JWT, JWT_SVID, 'urn:ietf:params:oauth:token-type:access_token', ASSERTION_TYPE,
  'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe', 'fuzz-client', 'spiffe-public', API, DB, 'spiffe://example.org/db', 'https://x/#f',
  'read', 'read write', 'read  write', ' read', 'admin', 'https://other.example.test/a?x=1',
];
const PERCENT_TRICKS = ['%', '%%', '%zz', '%0', '%00', '%0A', '%C0%AF', '%ED%A0%80', '%FF', '%2B', '%252B', '%E2%80%8B', '%F0%9F%98', '+', '&=&', '=', '%3D', '%26'];

function valueArbitrary(invalidTokens: readonly string[]): fc.Arbitrary<Value> {
  const plain = (secret: boolean) => (text: string): Value => ({ text, raw: false, secret });
  const units = (min: number, max: number) => fc.integer({ min, max }).map((code) => String.fromCharCode(code));
  return fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...VOCABULARY).map(plain(false)) },
    { weight: 3, arbitrary: fc.constantFrom(...invalidTokens).map(plain(true)) },
    { weight: 3, arbitrary: fc.string({ maxLength: 40 }).map(plain(true)) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 24 }).map(plain(true)) },
    { weight: 2, arbitrary: fc.string({ unit: units(0, 0x1f), minLength: 1, maxLength: 6 }).map(plain(false)) },
    { weight: 1, arbitrary: fc.string({ unit: units(0xd800, 0xdfff), minLength: 1, maxLength: 3 }).map(plain(false)) },
    { weight: 2, arbitrary: fc.array(fc.constantFrom(...PERCENT_TRICKS), { minLength: 1, maxLength: 4 }).map((tricks): Value => ({ text: tricks.join(''), raw: true, secret: false })) },
    { weight: 1, arbitrary: fc.integer({ min: 1_000, max: 100_000 }).map((length): Value => ({ text: 'A'.repeat(length), raw: false, secret: false })) },
    { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 8 }).map((bytes): Value => ({ text: Buffer.from(bytes).toString('latin1'), raw: true, secret: false })) },
  );
}

/** Percent-encodes every code unit's bytes, lone surrogates included (as their WTF-8 bytes, never valid UTF-8). */
function percentEncode(text: string): string {
  if (text.isWellFormed()) return encodeURIComponent(text).replaceAll('%20', '+');
  let out = '';
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (/^[A-Za-z0-9*\-._]$/.test(char)) out += char;
    else if (code === 0x20) out += '+';
    else {
      const bytes = code >= 0xd800 && code <= 0xdfff ? [0xe0 | (code >> 12), 0x80 | ((code >> 6) & 0x3f), 0x80 | (code & 0x3f)] : [...Buffer.from(char, 'utf8')];
      out += bytes.map((byte) => `%${byte.toString(16).toUpperCase().padStart(2, '0')}`).join('');
    }
  }
  return out;
}

function formBody(pairs: readonly (readonly [string, Value])[]): Buffer {
  return Buffer.concat(
    pairs.flatMap(([name, value], index) => [
      Buffer.from(index === 0 ? '' : '&'),
      // A name with a `%` is a percent trick itself (client%5Fid): sent as written.
      Buffer.from(name.includes('%') ? name : percentEncode(name)),
      Buffer.from('='),
      value.raw ? Buffer.from(value.text, 'latin1') : Buffer.from(percentEncode(value.text)),
    ]),
  );
}

function jsonMember(value: Value | readonly Value[] | number | boolean | null | Record<string, unknown>): string {
  if (Array.isArray(value)) return `[${value.map((item: Value) => JSON.stringify(item.text)).join(',')}]`;
  if (value !== null && typeof value === 'object' && 'text' in value) return JSON.stringify((value as Value).text);
  return JSON.stringify(value);
}

function randomCases(invalidTokens: readonly string[]): fc.Arbitrary<(door: Door) => Request> {
  const value = valueArbitrary(invalidTokens);
  const name = fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...NAMES) }, { weight: 1, arbitrary: fc.constantFrom(...TRICKY_NAMES) }, { weight: 1, arbitrary: fc.string({ maxLength: 12 }) });
  const form = fc.record({
    pairs: fc.array(fc.tuple(name, value), { maxLength: 10 }),
    contentType: fc.constantFrom('application/x-www-form-urlencoded', 'application/x-www-form-urlencoded', 'application/x-www-form-urlencoded; charset=utf-8', 'application/x-www-form-urlencoded; charset=latin1', 'text/plain', 'application/json', undefined),
    authorization: fc.option(fc.constantFrom('Basic ZnV6ei1jbGllbnQ6eA==', 'Basic %%%', 'Bearer abc', `Basic ${Buffer.from(':').toString('base64')}`, 'Basic', 'Basic ' + 'A'.repeat(5_000)), { nil: undefined, freq: 4 }),
  });
  const member = fc.oneof(
    { weight: 6, arbitrary: value },
    { weight: 2, arbitrary: fc.array(value, { maxLength: 4 }) },
    { weight: 1, arbitrary: fc.oneof(fc.integer(), fc.double(), fc.boolean(), fc.constant(null)) },
    { weight: 1, arbitrary: fc.dictionary(fc.string({ maxLength: 6 }), fc.string({ maxLength: 6 }), { maxKeys: 3 }) },
  );
  const json = fc.record({
    members: fc.array(fc.tuple(name, member, fc.constantFrom('plain', 'escaped')), { maxLength: 8 }),
    shape: fc.constantFrom('object', 'object', 'object', 'duplicate', 'trailing', 'bom', 'array', 'deep', 'raw-bytes'),
    contentType: fc.constantFrom('application/json', 'application/json', 'application/json; charset=utf-8', 'application/json; charset=utf-16', 'text/plain', 'application/x-www-form-urlencoded'),
  });
  return fc.oneof(
    form.map(({ pairs, contentType, authorization }) => (door: Door): Request => ({
      door,
      kind: 'random-form',
      contentType,
      authorization,
      body: formBody(pairs),
      tokens: pairs.filter(([, item]) => item.secret).map(([, item]) => item.text),
      expectIssued: false,
      describe: 'random form',
    })),
    json.map(({ members, shape, contentType }) => (door: Door): Request => {
      const texts = members.map(([key, item, spelling]) => `${spelling === 'escaped' ? JSON.stringify(key).replace(/_/g, '\\u005f') : JSON.stringify(key)}:${jsonMember(item as Value)}`);
      let text = `{${texts.join(',')}}`;
      if (shape === 'duplicate' && texts.length > 0) text = `{${[...texts, texts[0]].join(',')}}`;
      if (shape === 'trailing') text += '{}';
      if (shape === 'bom') text = `\uFEFF${text}`;
      if (shape === 'array') text = `[${text}]`;
      if (shape === 'deep') text = `{"subject_token":${'['.repeat(5_000)}${']'.repeat(5_000)}}`;
      const body = shape === 'raw-bytes' ? Buffer.concat([Buffer.from(text.slice(0, -1)), Buffer.from(texts.length > 0 ? ',"x":"\xc0\xaf\xff"}' : '"x":"\xc0\xaf"}', 'latin1')]) : Buffer.from(text, 'utf8');
      const tokens = members.flatMap(([, item]) => [item].flat()).filter((item): item is Value => typeof item === 'object' && item !== null && (item as Value).secret === true && typeof (item as Value).text === 'string').map((item) => item.text);
      return { door, kind: 'random-json', contentType, body, tokens, expectIssued: false, describe: `random json (${shape})` };
    }),
  );
}

// ---------------------------------------------------------------------------------------------------

interface Counts {
  requests: number;
  status2xx: number;
  status4xx: number;
  status5xx: number;
  other: number;
  issued: number;
  issuedForInvalid: number;
  validRefused: number;
  echoes: number;
  notOAuthError: number;
  missingNoStore: number;
  transportErrors: number;
  sameContentMutations: number;
  byDoor: Record<string, number>;
  byKind: Record<string, { requests: number; status4xx: number; status5xx: number; issued: number }>;
  byError: Record<string, number>;
  /** Findings by problem and case kind (door/mutation:target:what). */
  findingKinds: Record<string, number>;
}

let idp: LoopbackIssuer;
let client: TestClient;
let running: RunningBroker;
let subjectSigner: Signer;
let clientSigner: Signer;
let invalidTokens: string[];
/** An assertion some earlier request already spent: replaying it must fail. */
let spentAssertion: string;
const findings: Finding[] = [];
const counts: Counts = {
  requests: 0, status2xx: 0, status4xx: 0, status5xx: 0, other: 0, issued: 0, issuedForInvalid: 0, validRefused: 0, echoes: 0, notOAuthError: 0,
  missingNoStore: 0, transportErrors: 0, sameContentMutations: 0, byDoor: {}, byKind: {}, byError: {}, findingKinds: {},
};

const urls = (): Record<Door, string> => ({ form: running.tokenEndpoint, json: `${running.issuer}/v1/exchange/token`, spiffe: `${running.issuer}/spiffe/exchange` });

beforeAll(async () => {
  idp = await LoopbackIssuer.start({ alg: 'RS256' });
  client = await TestClient.create('fuzz-client', 'ES256');
  running = await startBroker(
    () => ({
      clients: [client.config(['token_exchange', 'jwt_bearer', 'client_credentials']), { id: 'spiffe-public', auth: { method: 'none' } }],
      plugins: [
        { use: '@tessera/plugin-oidc', config: { tokenTypes: [JWT, ID_TOKEN], issuers: [{ issuer: idp.issuer }] } },
        accessTokenPlugin,
        // Stands in for SPIRE so the SPIFFE door has a JWT-SVID issuer (as in the door's own e2e test).
        { use: './fixtures/fixed-svid-issuer.mjs' },
      ],
      policy: {
        rules: [
          {
            id: 'idp-users-to-svid',
            match: { issuers: [idp.issuer], requestedTokenTypes: [JWT_SVID] },
            grant: { audiences: ['spiffe://example.org/**', DB], issuerParameters: { spiffeId: 'spiffe://example.org/user/{subject}' } },
          },
          allowRule(idp.issuer),
        ],
      },
      endpoints: { jsonExchange: { enabled: true }, spiffeExchange: { enabled: true, publicClient: 'spiffe-public' } },
    }),
    { baseDir: resolve(import.meta.dirname, '../e2e') },
  );
  const now = () => Math.floor(Date.now() / 1000);
  subjectSigner = {
    alg: idp.key.alg,
    key: idp.key.privateKey,
    header: () => ({ alg: idp.key.alg, kid: idp.key.kid, typ: 'JWT' }),
    claims: () => ({ iss: idp.issuer, sub: 'grace', aud: running.issuer, iat: now(), exp: now() + 300, jti: randomUUID() }),
  };
  clientSigner = {
    alg: client.key.alg,
    key: client.key.privateKey,
    header: () => ({ alg: client.key.alg, kid: client.key.kid, typ: 'JWT' }),
    claims: () => ({ iss: client.id, sub: client.id, aud: running.issuer, iat: now(), exp: now() + 60, jti: randomUUID() }),
  };
  const stranger = await LoopbackIssuer.start();
  invalidTokens = [
    await idp.mint({ sub: 'grace', aud: running.issuer }, { expiresIn: -600 }),
    await idp.mint({ sub: 'grace', aud: 'https://someone-else.example.test' }),
    await stranger.mint({ sub: 'grace', aud: running.issuer }),
    await client.assertion('https://someone-else.example.test'),
    await client.assertion(running.issuer, {}, { lifetime: -600 }),
    'eyJhbGciOiJub25lIn0.eyJzdWIiOiJncmFjZSJ9.',
    'eyJhbGciOiJIUzI1NiJ9.e30.c2ln',
    'a.b.c',
    '...',
    'eyJ',
  ];
  await stranger.close();
  // The first spent assertion, for replay cases drawn before any valid one.
  const first = await mutatedRequest('form', undefined);
  const response = await fetch(urls().form, { method: 'POST', headers: { 'content-type': first.contentType! }, body: first.body });
  if (response.status !== 200) throw new Error(`fuzz setup: a valid request was refused: ${await response.text()}`);
  spentAssertion = first.spends!;
});

afterAll(async () => {
  const serverErrors = running?.audit.records.filter((record) => record.error === 'server_error').length;
  console.log(`\nFUZZ_COUNTS ${JSON.stringify({ runs: RUNS, seed: SEED, ...counts, auditServerErrors: serverErrors, findings: findings.length })}`);
  for (const finding of findings.slice(0, 20)) console.log(`FUZZ_FINDING ${JSON.stringify(finding)}`);
  await running?.close();
  await idp?.close();
});

/**
 * A valid subject token. Subject tokens are not single use, so one RSA signature serves a few requests
 * (keeps the default run fast); client assertions are single use and always fresh.
 */
let pooled: { token: string; uses: number; at: number } | undefined;
async function subjectToken(): Promise<string> {
  if (!pooled || pooled.uses >= 8 || Date.now() - pooled.at > 30_000) pooled = { token: await sign(subjectSigner), uses: 0, at: Date.now() };
  pooled.uses++;
  return pooled.token;
}

/** A valid request for a template, with fresh tokens; the caller may mutate it. */
async function validRequest(template: Template): Promise<{ fields: [string, string | string[]][]; subject: string; assertion: string; door: Door }> {
  const subject = await subjectToken();
  const assertion = await sign(clientSigner);
  const auth: [string, string][] = [['client_assertion_type', ASSERTION_TYPE], ['client_assertion', assertion]];
  switch (template) {
    case 'form':
    case 'json':
      return { door: template, subject, assertion, fields: [['grant_type', TOKEN_EXCHANGE], ['subject_token', subject], ['subject_token_type', ID_TOKEN], ['audience', API], ['scope', 'read'], ...auth] };
    case 'bearer':
      return { door: 'form', subject, assertion, fields: [['grant_type', JWT_BEARER], ['assertion', subject], ['scope', 'read'], ...auth] };
    case 'spiffe':
      return { door: 'spiffe', subject, assertion, fields: [['token', subject], ['audience', [DB]], ...auth] };
  }
}

function encode(door: Door, fields: readonly (readonly [string, string | string[]])[]): { contentType: string; body: Buffer } {
  if (door === 'form') {
    return { contentType: 'application/x-www-form-urlencoded', body: Buffer.from(fields.flatMap(([name, value]) => [value].flat().map((item) => `${percentEncode(name)}=${percentEncode(item)}`)).join('&')) };
  }
  return { contentType: 'application/json', body: Buffer.from(`{${fields.map(([name, value]) => `${JSON.stringify(name)}:${JSON.stringify(value)}`).join(',')}}`) };
}

type RequestMutation = { readonly kind: 'token'; readonly target: 'subject' | 'client'; readonly mutation: TokenMutation } | { readonly kind: 'repeat-param' | 'swap-tokens' | 'replay' };

const requestMutation: fc.Arbitrary<RequestMutation> = fc.oneof(
  { weight: 12, arbitrary: fc.record({ kind: fc.constant('token' as const), target: fc.constantFrom('subject' as const, 'client' as const), mutation: tokenMutation }) },
  { weight: 1, arbitrary: fc.constantFrom({ kind: 'repeat-param' as const }, { kind: 'swap-tokens' as const }, { kind: 'replay' as const }) },
);

async function mutatedRequest(template: Template, change: RequestMutation | undefined): Promise<Request> {
  const valid = await validRequest(template);
  const tokens = [valid.subject, valid.assertion];
  let fields = valid.fields;
  let kind = 'valid';
  let sameSpelling = false;
  let same = false;
  if (change?.kind === 'token') {
    const original = change.target === 'subject' ? valid.subject : valid.assertion;
    const mutated = await mutateToken(original, change.mutation, change.target === 'subject' ? subjectSigner : clientSigner);
    kind = `mutation:${change.target}:${describeMutation(change.mutation)}`;
    sameSpelling = mutated === original;
    same = !sameSpelling && sameContent(original, mutated);
    fields = fields.map(([name, value]) => [name, value === original ? mutated : value] as [string, string | string[]]);
    tokens.push(mutated);
  } else if (change?.kind === 'repeat-param') {
    kind = 'mutation:repeat-param';
    const name = template === 'spiffe' ? 'token' : template === 'bearer' ? 'assertion' : 'subject_token';
    fields = [...fields, [name, await sign(subjectSigner, subjectSigner.header(), { ...subjectSigner.claims(), sub: 'mallory' })]];
  } else if (change?.kind === 'swap-tokens') {
    kind = 'mutation:swap-tokens';
    fields = fields.map(([name, value]) => [name, value === valid.subject ? valid.assertion : value === valid.assertion ? valid.subject : value] as [string, string | string[]]);
  } else if (change?.kind === 'replay') {
    kind = 'mutation:replay';
    fields = fields.map(([name, value]) => [name, value === valid.assertion ? spentAssertion : value] as [string, string | string[]]);
    tokens.push(spentAssertion);
  }
  const { contentType, body } = encode(valid.door, fields);
  // A mutation that left the very same string is the valid request again.
  const expectIssued = kind === 'valid' || sameSpelling;
  return { door: valid.door, kind: `${template}/${kind}`, contentType, body, tokens, expectIssued, sameContent: same, ...(expectIssued ? { spends: valid.assertion } : {}), describe: kind };
}

async function send(request: Request): Promise<void> {
  counts.requests++;
  counts.byDoor[request.door] = (counts.byDoor[request.door] ?? 0) + 1;
  const bucket = (counts.byKind[request.kind.replace(/:.*/, '')] ??= { requests: 0, status4xx: 0, status5xx: 0, issued: 0 });
  bucket.requests++;
  if (request.sameContent) counts.sameContentMutations++;
  const headers: Record<string, string> = {};
  if (request.contentType !== undefined) headers['content-type'] = request.contentType;
  if (request.authorization !== undefined) headers.authorization = request.authorization;
  const finding = (problem: string, status: number, response: string) => {
    const body = request.body.toString('latin1');
    const key = `${problem} — ${request.kind}`;
    counts.findingKinds[key] = (counts.findingKinds[key] ?? 0) + 1;
    findings.push({ problem, kind: request.kind, door: request.door, status, response: response.slice(0, 300), request: body.length > 4_096 ? `${body.slice(0, 4_096)}…(${body.length} bytes)` : body, describe: request.describe });
  };
  let response: Response;
  let text: string;
  try {
    // Node's fetch is undici with a keep-alive pool: connections are reused across requests.
    response = await fetch(urls()[request.door], { method: 'POST', headers, body: request.body });
    text = await response.text();
  } catch (error) {
    counts.transportErrors++;
    finding(`transport error: ${String((error as { cause?: unknown }).cause ?? error)}`, 0, '');
    return;
  }
  const { status } = response;
  if (status >= 200 && status < 300) counts.status2xx++;
  else if (status >= 400 && status < 500) (counts.status4xx++, bucket.status4xx++);
  else if (status >= 500) (counts.status5xx++, bucket.status5xx++);
  else counts.other++;
  let body: Record<string, unknown> | undefined;
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) body = parsed as Record<string, unknown>;
  } catch {
    body = undefined;
  }
  const issued = status === 200 || (body !== undefined && CREDENTIAL_MEMBERS.some((member) => body[member] !== undefined));
  if (issued) (counts.issued++, bucket.issued++);
  if (issued && request.spends !== undefined) spentAssertion = request.spends;
  if (status >= 500) finding('5xx', status, text);
  if (response.headers.get('cache-control') !== 'no-store') (counts.missingNoStore++, finding('no Cache-Control: no-store', status, text));
  if (status >= 400) {
    const error = body?.error;
    counts.byError[String(error)] = (counts.byError[String(error)] ?? 0) + 1;
    if (typeof error !== 'string' || !OAUTH_ERROR_CODES.has(error) || typeof body?.error_description !== 'string') (counts.notOAuthError++, finding('4xx without an RFC 6749 error', status, text));
  } else if (body === undefined) {
    finding('answer is not a JSON object', status, text);
  }
  if (issued && !request.expectIssued) (counts.issuedForInvalid++, finding(request.sameContent ? 'issued for a respelled token (same decoded bytes)' : 'issued for invalid input', status, text));
  if (!issued && request.expectIssued) (counts.validRefused++, finding('valid request refused', status, text));
  // Refusals may echo nothing; an answer carries a new token whose structure (header, iss prefix) is
  // shared with any JWT, so there only the random signature bytes are checked.
  const answered = `${text} ${response.headers.get('www-authenticate') ?? ''}`;
  const echoed = issued ? request.tokens.some((token) => echoes(token.split('.')[2] ?? '', answered)) : request.tokens.some((token) => echoes(token, answered));
  if (echoed) (counts.echoes++, finding('response echoes submitted token content', status, text));
}

it('control: a valid request is issued at every door, and the spent assertion is refused on replay', async () => {
  for (const template of ['form', 'json', 'spiffe', 'bearer'] as const) {
    const request = await mutatedRequest(template, undefined);
    const response = await fetch(urls()[request.door], { method: 'POST', headers: { 'content-type': request.contentType! }, body: request.body });
    const body = (await response.json()) as Record<string, unknown>;
    expect(response.status, `${template}: ${JSON.stringify(body)}`).toBe(200);
    expect(body.access_token ?? body.jwt_svid).toEqual(expect.any(String));
    spentAssertion = request.spends!;
    const replay = await mutatedRequest(template, { kind: 'replay' });
    const refused = await fetch(urls()[replay.door], { method: 'POST', headers: { 'content-type': replay.contentType! }, body: replay.body });
    expect([refused.status, ((await refused.json()) as Record<string, unknown>).error]).toEqual([401, 'invalid_client']);
  }
});

it(
  `fuzzes the form, JSON and SPIFFE doors (${RUNS} requests): never a 5xx, always an OAuth error, nothing issued for invalid input, nothing echoed`,
  async () => {
    const template = fc.constantFrom<Template>('form', 'form', 'json', 'json', 'spiffe', 'spiffe', 'bearer');
    const door = fc.constantFrom<Door>('form', 'json', 'spiffe');
    const testCase = fc.oneof(
      { weight: 1, arbitrary: template.map((chosen) => () => mutatedRequest(chosen, undefined)) },
      { weight: 6, arbitrary: fc.tuple(template, requestMutation).map(([chosen, change]) => () => mutatedRequest(chosen, change)) },
      { weight: 3, arbitrary: fc.tuple(door, randomCases(invalidTokens)).map(([chosen, build]) => () => Promise.resolve(build(chosen))) },
    );
    await fc.assert(
      fc.asyncProperty(testCase, async (build) => {
        await send(await build());
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: true },
    );
    expect(findings, `seed ${SEED}; first findings:\n${findings.slice(0, 10).map((finding) => JSON.stringify(finding)).join('\n')}`).toEqual([]);
    expect(counts.requests).toBe(RUNS);
    expect(running.audit.records.filter((record) => record.error === 'server_error')).toEqual([]);
  },
  RUNS * 100 + 60_000,
);
