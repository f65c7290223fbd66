import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { compactVerify, decodeProtectedHeader, flattenedVerify, generalVerify, generateKeyPair, exportJWK, importJWK, type FlattenedJWS, type GeneralJWS, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GuardedFetcher, RemoteJwksCache, silentLogger } from '@tessera/core';
import { ASYMMETRIC_ALGORITHMS, InvalidToken, JwtVerifier, TOKEN_TYPE_JWT, trustedIssuerSchema, type JwksCache, type ValidationContext } from '@tessera/plugin-sdk';
import { sendJson, startLoopbackServer, type LoopbackServer } from '@tessera/plugin-testkit';
import { ASSERTION_TYPE, postToken, startBroker, type RunningBroker } from '../e2e/support.js';
import { b64u, signingKey, signInput } from './jws.js';
import { echoes } from './oracle.js';

// Read in place from the shared vectors (CI puts shared/ beside the clone; never copied into the repository).
const VECTORS = resolve(import.meta.dirname, '../../../shared/vectors/wycheproof/json_web_signature_test.json');

interface Vector {
  tcId: number;
  comment: string;
  jws: string | FlattenedJWS | GeneralJWS;
  result: 'valid' | 'invalid';
  flags: string[];
}
interface VectorGroup {
  public?: JWK;
  private?: JWK;
  tests: Vector[];
}

/**
 * Where the broker is deliberately stricter than a vector's label. Each entry says why; nothing else may
 * disagree with the vectors.
 */
const STRICTER: Readonly<Record<number, string>> = {
  346: 'header alg PS384 on a key whose alg is PS256: the key decides the algorithm (RFC 7517 §4.4, RFC 8725 §3.1)',
  350: 'header alg PS384 on a key whose alg is PS256: the key decides the algorithm (RFC 7517 §4.4, RFC 8725 §3.1)',
  // Symmetric, so refused anyway (HS* is never allowed); listed because the encoding gate alone refuses them.
  372: 'a character outside the base64url alphabet inside the header: RFC 4648 §3.3 says reject it, lenient decoders skip it',
  373: 'a character outside the base64url alphabet inside the payload: RFC 4648 §3.3 says reject it, lenient decoders skip it',
};

/**
 * How far a token got, in the order the product checks. `format`, `algorithm` and `signature` are the
 * signature/format layer; `claims-set` (header or payload not a JOSE header / JWT claims set, before any
 * key is looked up), `selection` (no configured issuer or client is named) and `claims` (after the
 * signature verified) are refusals for claims.
 */
type Layer = 'format' | 'claims-set' | 'selection' | 'algorithm' | 'signature' | 'claims' | 'accepted' | 'fault';
const LAYERS: readonly Layer[] = ['format', 'claims-set', 'selection', 'algorithm', 'signature', 'claims', 'accepted', 'fault'];
/** Summary column order: the signature/format layer first, then the claims refusals. */
const COLUMNS: readonly Layer[] = ['format', 'algorithm', 'signature', 'claims-set', 'selection', 'claims', 'fault'];
const SIGNATURE_OR_FORMAT: ReadonlySet<Layer> = new Set(['format', 'algorithm', 'signature']);

/**
 * What is sent. The vectors' payloads are not JWT claims sets ("foo", "Test", ...) and both product paths
 * read the unverified claims before any key (the `iss` or `sub` picks the keys), so no vector as-is ever
 * reaches a signature check. The other forms carry each vector into the signature layer:
 * - `transplanted`: the vector's header and signature segments around a claims set the path accepts. The
 *   signature was made over other bytes, so it must fail, whatever the label.
 * - `re-signed`: the vector's header segment and that claims set, signed with the group's private key:
 *   a control showing that the key, the header and the claims are accepted, so the transplanted refusal
 *   is the signature's. Made for vectors labelled valid and for groups whose key may not verify.
 * - `forged`: a header that embeds a JWK gets a fresh attacker key, embedded, that signs the claims set.
 */
type Form = 'as-is' | 'transplanted' | 're-signed' | 'forged';
const FORMS: readonly Form[] = ['as-is', 'transplanted', 're-signed', 'forged'];

interface Group {
  readonly index: number;
  readonly label: string;
  /** As an operator would publish it; the vectors spell P-521 ECDSA `ES521`, RFC 7518 §3.4 says ES512. */
  readonly published: JWK;
  readonly signing: JWK;
  readonly symmetric: boolean;
  /** `use` or `key_ops` forbid verifying signatures with this key. */
  readonly keyForbidsVerify: boolean;
  readonly tests: readonly Vector[];
}

interface Outcome {
  readonly path: 'jwt-verifier' | 'client-assertion';
  readonly form: Form;
  readonly group: Group;
  readonly vector: Vector;
  readonly layer: Layer;
  readonly reason: string;
}

const file = JSON.parse(await readFile(VECTORS, 'utf8')) as { testGroups: VectorGroup[]; numberOfTests: number };
const groups: Group[] = file.testGroups.map((group, index) => {
  const key = (group.public ?? group.private)!;
  const published = key.alg === 'ES521' ? { ...key, alg: 'ES512' } : key;
  const ids = group.tests.map((test) => test.tcId);
  return {
    index,
    label: `#${Math.min(...ids)}-${Math.max(...ids)} ${key.kty} ${key.alg ?? 'no-alg'} ${key.use ? `use=${key.use}` : key.key_ops ? `key_ops=${key.key_ops.join(',')}` : ''}`.trim(),
    published,
    signing: group.private!,
    symmetric: key.kty === 'oct',
    keyForbidsVerify: (key.use !== undefined && key.use !== 'sig') || (key.key_ops !== undefined && !key.key_ops.includes('verify')),
    tests: group.tests,
  };
});
const outcomes: Outcome[] = [];

const BROKER = 'https://broker.example.test';

function segments(vector: Vector): [string, string, string] | undefined {
  if (typeof vector.jws !== 'string') return undefined;
  const parts = vector.jws.split('.');
  return parts.length === 3 ? (parts as [string, string, string]) : undefined;
}

function headerOf(segment: string): Record<string, unknown> | undefined {
  try {
    const header = decodeProtectedHeader(`${segment}..`) as Record<string, unknown>;
    return typeof header.alg === 'string' ? header : undefined;
  } catch {
    return undefined;
  }
}

/** Tokens to send for one vector, by form, around the claims set `claims` the path would accept. */
async function variants(group: Group, vector: Vector, claims: () => Record<string, unknown>): Promise<[Form, string][]> {
  const out: [Form, string][] = [];
  if (typeof vector.jws === 'string') out.push(['as-is', vector.jws]);
  const parts = segments(vector);
  if (!parts) return out;
  const [header, , signature] = parts;
  out.push(['transplanted', `${header}.${b64u(JSON.stringify(claims()))}.${signature}`]);
  const decoded = headerOf(header);
  if (decoded && (vector.result === 'valid' || group.keyForbidsVerify)) {
    // The header segment is kept byte for byte; the key may not support the header's algorithm.
    const key = await signingKey(decoded.alg as string, group.signing);
    const input = `${header}.${b64u(JSON.stringify(claims()))}`;
    if (key) out.push(['re-signed', `${input}.${await signInput(decoded.alg as string, key, input)}`]);
  }
  if (decoded?.jwk !== undefined && typeof decoded.alg === 'string') {
    const attacker = await generateKeyPair(decoded.alg, { extractable: true });
    const forgedHeader = b64u(JSON.stringify({ ...decoded, jwk: await exportJWK(attacker.publicKey) }));
    const input = `${forgedHeader}.${b64u(JSON.stringify(claims()))}`;
    out.push(['forged', `${input}.${await signInput(decoded.alg, attacker.privateKey, input)}`]);
  }
  return out;
}

/** The layers a form may stop at, given the vector's label and the group's key. */
function expectation(form: Form, group: Group, vector: Vector): { readonly layers: readonly Layer[]; readonly why: string } {
  const valid = vector.result === 'valid' && !group.symmetric && STRICTER[vector.tcId] === undefined;
  switch (form) {
    case 'as-is':
      // Never accepted: no payload is a claims set. A vector labelled valid must not be refused for its
      // encoding or signature: it gets as far as the claims-set check.
      return valid ? { layers: ['claims-set'], why: 'valid vector stops only at the claims-set check' } : { layers: LAYERS.filter((layer) => layer !== 'accepted' && layer !== 'claims' && layer !== 'fault'), why: 'never accepted, never past the signature' };
    case 'transplanted':
      return valid ? { layers: ['signature'], why: 'a valid signature over other bytes fails the signature check' } : { layers: [...SIGNATURE_OR_FORMAT], why: 'refused at the signature/format layer' };
    case 're-signed':
      if (valid && !group.keyForbidsVerify) return { layers: ['accepted'], why: 'the group key signs a claims set the path accepts' };
      return { layers: group.symmetric ? [...SIGNATURE_OR_FORMAT] : ['signature'], why: group.symmetric ? 'HS* is never allowed' : group.keyForbidsVerify ? 'the key may not verify (use/key_ops)' : STRICTER[vector.tcId]! };
    case 'forged':
      return { layers: ['signature'], why: 'header-supplied keys are never used' };
  }
}

function check(outcome: Outcome): string | undefined {
  const { layers, why } = expectation(outcome.form, outcome.group, outcome.vector);
  if (layers.includes(outcome.layer)) return undefined;
  return `${outcome.path} ${outcome.form} #${outcome.vector.tcId} ${outcome.vector.result} ${outcome.vector.comment}: ${outcome.layer} (${outcome.reason}); expected ${layers.join('|')}: ${why}`;
}

/** Per-group, per-path, per-form counts: the numbers the report needs. */
function summarize(): { json: unknown; markdown: string } {
  const rows: Record<string, unknown>[] = [];
  const lines: string[] = [];
  for (const path of ['jwt-verifier', 'client-assertion'] as const) {
    for (const form of FORMS) {
      const selected = outcomes.filter((outcome) => outcome.path === path && outcome.form === form);
      if (selected.length === 0) continue;
      lines.push('', `### ${path}, ${form} (${selected.length} tokens)`, '', '| group | sent (valid/invalid) | accepted | refused at signature/format | refused for claims | format | algorithm | signature | claims-set | selection | claims | fault |', '|---|---|---|---|---|---|---|---|---|---|---|---|');
      for (const group of groups) {
        const mine = selected.filter((outcome) => outcome.group === group);
        if (mine.length === 0) continue;
        const count = (layer: Layer) => mine.filter((outcome) => outcome.layer === layer).length;
        const byLayer = Object.fromEntries(LAYERS.map((layer) => [layer, count(layer)]));
        const valid = mine.filter((outcome) => outcome.vector.result === 'valid').length;
        const row = {
          path,
          form,
          group: group.label,
          sent: mine.length,
          valid,
          invalid: mine.length - valid,
          accepted: count('accepted'),
          refusedAtSignatureOrFormat: count('format') + count('algorithm') + count('signature'),
          refusedForClaims: count('claims-set') + count('selection') + count('claims'),
          byLayer,
        };
        rows.push(row);
        lines.push(
          `| ${group.label} | ${mine.length} (${valid}/${mine.length - valid}) | ${row.accepted} | ${row.refusedAtSignatureOrFormat} | ${row.refusedForClaims} | ${COLUMNS.map((layer) => byLayer[layer]).join(' | ')} |`,
        );
      }
    }
  }
  return { json: rows, markdown: lines.join('\n') };
}

let jwks: LoopbackServer;
let verifier: JwtVerifier;
let lookedUp = false;
let running: RunningBroker;
const issuerOf = (group: Group) => `${jwks.url}/g${group.index}`;
const clientOf = (group: Group) => `wycheproof-g${group.index}`;

beforeAll(async () => {
  jwks = await startLoopbackServer((request, response) => {
    const match = /^\/g(\d+)\/jwks$/.exec(request.url ?? '');
    const group = match ? groups[Number(match[1])] : undefined;
    if (!group) return sendJson(response, 404, { error: 'not_found' });
    sendJson(response, 200, { keys: [group.published] });
  });
  const http = new GuardedFetcher({ allowLoopbackHttp: true, timeoutMs: 2_000, maxResponseBytes: 65_536 });
  const cache = new RemoteJwksCache(http, { now: () => new Date() }, silentLogger);
  // Observes, at the DI edge, whether verification got as far as looking up a key: only there does the
  // signature check begin. The real cache answers.
  const observed: JwksCache = {
    remote: (uri) => {
      const resolveKey = cache.remote(uri);
      return (header, token) => {
        lookedUp = true;
        return resolveKey(header, token);
      };
    },
    warm: (uri) => cache.warm(uri),
  };
  // The widest configuration an operator can write: every asymmetric algorithm allowed for every issuer.
  verifier = new JwtVerifier(
    { issuers: groups.map((group) => trustedIssuerSchema.parse({ issuer: issuerOf(group), jwksUri: `${issuerOf(group)}/jwks`, algorithms: [...ASYMMETRIC_ALGORITHMS] })) },
    { http, jwks: observed },
  );
  await verifier.warm();
  running = await startBroker(() => ({
    clients: groups.map((group) => ({
      id: clientOf(group),
      auth: { method: 'private_key_jwt', jwks: { keys: [group.published] }, algorithms: [...ASYMMETRIC_ALGORITHMS] },
      grantTypes: ['client_credentials'],
    })),
  }));
});

afterAll(async () => {
  const { json, markdown } = summarize();
  console.log(`\nWycheproof JWS through the product (${file.numberOfTests} vectors)\n${markdown}\n`);
  console.log(`WYCHEPROOF_SUMMARY_JSON ${JSON.stringify(json)}`);
  await running?.close();
  await jwks?.close();
});

it('covers the whole file', () => {
  expect(groups.reduce((sum, group) => sum + group.tests.length, 0)).toBe(file.numberOfTests);
  expect(groups.flatMap((group) => group.tests).every((vector) => typeof vector.jws === 'string')).toBe(true);
});

describe('JwtVerifier (@tessera/plugin-sdk), keys from a loopback JWKS', () => {
  function context(): ValidationContext {
    return { role: 'subject', tokenType: TOKEN_TYPE_JWT, brokerIssuer: BROKER, tokenEndpoint: `${BROKER}/token`, now: new Date(), signal: AbortSignal.timeout(5_000) };
  }

  function layerOf(error: unknown): [Layer, string] {
    if (error === undefined) return ['accepted', 'verified'];
    if (!(error instanceof InvalidToken)) return ['fault', String(error)];
    const detail = error.detail ?? error.reason;
    if (lookedUp) {
      // Past key lookup jose checks key, algorithm and signature, and only then the claims. `malformed`
      // there is ambiguous (a bad signature encoding or a bad claims set), so it counts as past the signature.
      return [['signature', 'unknown_key', 'algorithm'].includes(error.reason) ? 'signature' : 'claims', detail];
    }
    if (error.reason === 'too_large' || detail === 'malformed: not a compact JWS' || detail === 'malformed: crit header') return ['format', detail];
    if (error.reason === 'untrusted_issuer') return ['selection', detail];
    if (error.reason === 'algorithm') return ['algorithm', detail];
    // Anything else before key lookup is about the header or claims set as decoded, unverified.
    return ['claims-set', detail];
  }

  it('refuses every vector as-is and transplanted, letting none labelled invalid past the signature layer; accepts the valid ones re-signed', async () => {
    const violations: string[] = [];
    for (const group of groups) {
      for (const vector of group.tests) {
        const claims = () => {
          const now = Math.floor(Date.now() / 1000);
          return { iss: issuerOf(group), sub: `vector-${vector.tcId}`, aud: BROKER, iat: now, exp: now + 300, jti: randomUUID() };
        };
        for (const [form, token] of await variants(group, vector, claims)) {
          lookedUp = false;
          const error = await verifier.verify(token, context()).then(() => undefined, (caught: unknown) => caught);
          const [layer, reason] = layerOf(error);
          const outcome: Outcome = { path: 'jwt-verifier', form, group, vector, layer, reason };
          outcomes.push(outcome);
          const violation = check(outcome);
          if (violation) violations.push(violation);
          if (error instanceof InvalidToken && echoes(token, `${error.description} ${error.detail ?? ''}`)) violations.push(`jwt-verifier ${form} #${vector.tcId}: error echoes token content`);
        }
      }
    }
    expect(violations).toEqual([]);
  });
});

describe('client assertions (private_key_jwt) through a broker over HTTP', () => {
  const SIGNATURE_CODES = new Set(['ERR_JWS_SIGNATURE_VERIFICATION_FAILED', 'ERR_JWKS_NO_MATCHING_KEY', 'ERR_JWKS_MULTIPLE_MATCHING_KEYS', 'ERR_JWS_INVALID', 'ERR_JOSE_NOT_SUPPORTED', 'ERR_JWK_INVALID', 'verification']);

  function layerOf(status: number, reason: string, authenticated: boolean): Layer {
    if (status >= 500) return 'fault';
    if (authenticated) return 'accepted';
    // The form reader drops empty values, so an empty assertion arrives as a missing one.
    if (['client_auth: assertion too large', 'client_auth: assertion is not a compact JWS', 'client_auth: unsupported or missing client_assertion_type'].includes(reason)) return 'format';
    // `malformed assertion` may name why: an undecodable header or claims set, a repeated member, a mistyped claim.
    if (reason.startsWith('client_auth: malformed assertion')) return 'claims-set';
    if (reason.startsWith('client_auth: unknown client') || reason === 'client_auth: client_id mismatch') return 'selection';
    const code = /^client_auth: assertion rejected \(([A-Za-z_]+)/.exec(reason)?.[1];
    if (code === 'ERR_JOSE_ALG_NOT_ALLOWED') return 'algorithm';
    if (code !== undefined && SIGNATURE_CODES.has(code)) return 'signature';
    return 'claims';
  }

  it('authenticates no client with a vector as-is or transplanted, letting none labelled invalid past the signature layer; accepts the valid ones re-signed', async () => {
    const violations: string[] = [];
    for (const group of groups) {
      for (const vector of group.tests) {
        const claims = () => {
          const now = Math.floor(Date.now() / 1000);
          return { iss: clientOf(group), sub: clientOf(group), aud: running.issuer, iat: now, exp: now + 60, jti: randomUUID() };
        };
        for (const [form, token] of await variants(group, vector, claims)) {
          const response = await postToken(running.tokenEndpoint, { grant_type: 'client_credentials', client_assertion_type: ASSERTION_TYPE, client_assertion: token });
          const record = running.audit.records.find((entry) => entry.requestId === response.headers.get('x-request-id'));
          const authenticated = record !== undefined && 'client' in record && record.client !== undefined;
          const reason = record?.reason ?? `status ${response.status}`;
          const outcome: Outcome = { path: 'client-assertion', form, group, vector, layer: layerOf(response.status, reason, authenticated), reason };
          outcomes.push(outcome);
          const violation = check(outcome);
          if (violation) violations.push(violation);
          // Refusals, and acceptances refused later for want of a policy rule, follow the negative-test rule.
          if (!authenticated && (response.status !== 401 || response.body.error !== 'invalid_client')) violations.push(`client-assertion ${form} #${vector.tcId}: ${response.status} ${response.text}`);
          if (response.body.access_token !== undefined && form !== 're-signed') violations.push(`client-assertion ${form} #${vector.tcId}: token issued`);
          if (echoes(token, response.text)) violations.push(`client-assertion ${form} #${vector.tcId}: response echoes token content`);
        }
      }
    }
    expect(violations).toEqual([]);
  });
});

it('puts no symmetric algorithm on any allow-list, so no HS* vector can verify', () => {
  const symmetric = new Set(groups.filter((group) => group.symmetric).map((group) => group.published.alg));
  expect(symmetric.size).toBeGreaterThan(0);
  for (const alg of symmetric) expect(ASYMMETRIC_ALGORITHMS as readonly string[]).not.toContain(alg);
});

describe('jose alone, with the key’s own algorithm allowed (JSON serializations included)', () => {
  async function joseAccepts(vector: Vector, jwk: JWK): Promise<boolean> {
    const alg = jwk.alg;
    if (!alg) return false;
    try {
      const key = await importJWK(jwk, alg);
      if (typeof vector.jws === 'string') await compactVerify(vector.jws, key, { algorithms: [alg] });
      else if ('signatures' in vector.jws) await generalVerify(vector.jws, key, { algorithms: [alg] });
      else await flattenedVerify(vector.jws, key, { algorithms: [alg] });
      return true;
    } catch {
      return false;
    }
  }

  it('refuses every invalid asymmetric vector and verifies every valid one the broker does not deliberately refuse', async () => {
    for (const group of groups.filter((candidate) => !candidate.symmetric)) {
      for (const vector of group.tests) {
        const expected = vector.result === 'valid' && STRICTER[vector.tcId] === undefined;
        expect(await joseAccepts(vector, group.published), `#${vector.tcId} ${vector.comment}`).toBe(expected);
      }
    }
  });
});
