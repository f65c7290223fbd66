import { randomUUID } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { importJWK, SignJWT, type CryptoKey, type JWTPayload } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { generatePrivateJwk, InMemoryRevocationList, loadKeyRing, silentLogger, type LocalKeyRing } from '@tessera/core';
import { InvalidToken, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN, type AuthenticatedClient, type TokenRejection, type ValidationContext } from '@tessera/plugin-sdk';
import { generateTestKey } from '@tessera/plugin-testkit';
import { leakedFragments } from '@tessera/plugin-testkit/contract';
import plugin, { accessTokenConfigSchema, BrokerAccessTokenValidator, JwtAccessTokenIssuer } from '../src/index.js';

const BROKER = 'https://broker.example';
const TOKEN_ENDPOINT = `${BROKER}/token`;
const MCP_SPIFFE_ID = 'spiffe://prod.test/mcp';

/** A broker key ring, plus its private key so tests can sign what the ring itself never would (no typ, crit). */
async function keyRing(): Promise<{ ring: LocalKeyRing; privateKey: CryptoKey }> {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-at-'));
  const jwk = await generatePrivateJwk('ES256');
  await writeFile(join(dir, 'key.jwk'), JSON.stringify(jwk));
  const ring = await loadKeyRing({ algorithm: 'ES256', files: [{ path: 'key.jwk' }], generate: false }, { baseDir: dir, dataDir: '.', log: silentLogger });
  return { ring, privateKey: (await importJWK(jwk, 'ES256')) as CryptoKey };
}

const clock = { now: () => new Date() };
let ring: LocalKeyRing;
let ringPrivateKey: CryptoKey;
let revocations: InMemoryRevocationList;
let validator: BrokerAccessTokenValidator;

beforeAll(async () => {
  ({ ring, privateKey: ringPrivateKey } = await keyRing());
  revocations = new InMemoryRevocationList(clock);
  validator = new BrokerAccessTokenValidator({ keyRing: ring, revocationList: revocations });
});

const context = (overrides: Partial<ValidationContext> = {}): ValidationContext => ({
  role: 'subject',
  tokenType: TOKEN_TYPE_ACCESS_TOKEN,
  brokerIssuer: BROKER,
  tokenEndpoint: TOKEN_ENDPOINT,
  now: new Date(),
  signal: AbortSignal.timeout(5_000),
  ...overrides,
});

/** Claims as the broker's issuer writes them. */
function claims(overrides: JWTPayload = {}): JWTPayload {
  const now = Math.floor(Date.now() / 1000);
  return { iss: BROKER, sub: 'alice', aud: BROKER, iat: now, exp: now + 300, jti: randomUUID(), client_id: 'client-a', scope: 'read write', ...overrides };
}

const mint = async (overrides: JWTPayload = {}, typ = 'at+jwt') => (await ring.sign(claims(overrides), { typ })).token;

async function refusal(token: string, ctx: ValidationContext = context()): Promise<InvalidToken> {
  const error = await validator.validate(token, ctx).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error, 'the validator accepted a token it must refuse').toBeInstanceOf(InvalidToken);
  const refused = error as InvalidToken;
  expect(leakedFragments(token, [refused.message, refused.description, refused.detail ?? ''])).toEqual([]);
  return refused;
}

const expectRefused = async (token: string, reason: TokenRejection, ctx?: ValidationContext) => expect((await refusal(token, ctx)).reason).toBe(reason);

describe('BrokerAccessTokenValidator', () => {
  it('handles access tokens and may vouch for actors as the broker', () => {
    expect(validator.tokenTypes).toEqual([TOKEN_TYPE_ACCESS_TOKEN]);
    expect(validator.actorTrust).toBe('broker');
  });

  it('accepts a token the broker issued and describes it', async () => {
    const act = { sub: 'spiffe://prod.test/agent', iss: 'spiffe://prod.test' };
    const issuer = new JwtAccessTokenIssuer(accessTokenConfigSchema.parse({}), ring);
    const issued = await issuer.issue(
      {
        grantType: 'urn:ietf:params:oauth:grant-type:token-exchange',
        client: { id: 'client-a', authMethod: 'private_key_jwt' },
        subject: { issuer: 'https://idp.example', subject: 'alice', audiences: [BROKER], expiresAt: new Date(Date.now() + 600_000), tokenType: TOKEN_TYPE_ID_TOKEN, claims: {}, attributes: {} },
        audiences: [BROKER, 'https://api.example'],
        scopes: ['read', 'write'],
        lifetimeSeconds: 300,
        tokenType: TOKEN_TYPE_ACCESS_TOKEN,
        ruleId: 'r',
        parameters: {},
        act,
        claims: { email: 'alice@example.test' },
      },
      { brokerIssuer: BROKER, now: new Date(), signal: AbortSignal.timeout(1_000) },
    );
    const identity = await validator.validate(issued.token, context());
    expect(identity).toMatchObject({
      issuer: BROKER,
      subject: 'alice',
      audiences: [BROKER, 'https://api.example'],
      tokenType: TOKEN_TYPE_ACCESS_TOKEN,
      attributes: { client_id: 'client-a', scopes: ['read', 'write'] },
    });
    expect(identity.claims).toMatchObject({ jti: issued.jti, act, email: 'alice@example.test' });
    expect(identity.expiresAt.getTime()).toBe((identity.claims.exp as number) * 1000);
    expect(JSON.parse(JSON.stringify(identity.claims))).toEqual(identity.claims);
  });

  it('omits scopes when the token has none', async () => {
    const { scope: _scope, ...unscoped } = claims();
    const identity = await validator.validate((await ring.sign(unscoped, { typ: 'at+jwt' })).token, context());
    expect(identity.attributes).toEqual({ client_id: 'client-a' });
  });

  it('accepts the token endpoint as audience, and application/at+jwt as typ (RFC 9068 §4)', async () => {
    await expect(validator.validate(await mint({ aud: ['https://api.example', TOKEN_ENDPOINT] }), context())).resolves.toMatchObject({ subject: 'alice' });
    await expect(validator.validate(await mint({}, 'application/at+jwt'), context())).resolves.toMatchObject({ subject: 'alice' });
  });

  it('refuses a token from another Tessera that names this broker as issuer (foreign key)', async () => {
    const { ring: foreign } = await keyRing();
    await expectRefused((await foreign.sign(claims(), { typ: 'at+jwt' })).token, 'unknown_key');
    // Even when it reuses this broker's kid, the signature gives it away.
    const attacker = await generateTestKey('ES256');
    const sameKid = await new SignJWT(claims()).setProtectedHeader({ alg: 'ES256', kid: ring.publicJwks().keys[0]!.kid!, typ: 'at+jwt' }).sign(attacker.privateKey);
    await expectRefused(sameKid, 'signature');
  });

  it('refuses a token of its own keys that names another issuer', async () => {
    await expectRefused(await mint({ iss: 'https://other-broker.example' }), 'untrusted_issuer');
    await expectRefused(await mint({ iss: `${BROKER}/` }), 'untrusted_issuer');
  });

  it('refuses an expired token beyond the 30 s skew, and accepts one within it', async () => {
    const now = Math.floor(Date.now() / 1000);
    await expectRefused(await mint({ iat: now - 400, exp: now - 31 }), 'expired');
    await expect(validator.validate(await mint({ iat: now - 400, exp: now - 20 }), context())).resolves.toBeDefined();
  });

  it('refuses a token issued in the future', async () => {
    const now = Math.floor(Date.now() / 1000);
    await expectRefused(await mint({ iat: now + 120, exp: now + 400 }), 'not_yet_valid');
  });

  it('refuses a revoked token', async () => {
    const jti = randomUUID();
    const token = await mint({ jti });
    await expect(validator.validate(token, context())).resolves.toBeDefined();
    await revocations.revoke(jti, new Date(Date.now() + 600_000));
    const refused = await refusal(token);
    expect(refused.detail).toBe('claims: revoked');
  });

  it('requires exp, iat, jti, sub, client_id and aud', async () => {
    for (const claim of ['exp', 'iat', 'jti', 'sub', 'client_id', 'aud']) {
      const { [claim]: _dropped, ...rest } = claims();
      const refused = await refusal((await ring.sign(rest, { typ: 'at+jwt' })).token);
      expect(['claims', 'audience'], claim).toContain(refused.reason);
    }
    await expectRefused(await mint({ client_id: 42 }), 'claims');
    await expectRefused(await mint({ sub: '' }), 'claims');
    await expectRefused(await mint({ scope: ['read'] }), 'claims');
  });

  it('refuses a token whose audience names neither the broker nor the presenting client', async () => {
    const token = await mint({ aud: 'https://api.example' });
    await expectRefused(token, 'audience');
    await expectRefused(token, 'audience', context({ client: { id: 'client-b', authMethod: 'private_key_jwt' } }));
  });

  it('accepts a token whose audience is the authenticated client: its id or its SPIFFE ID', async () => {
    const byId: AuthenticatedClient = { id: 'mcp-server', authMethod: 'client_secret_basic' };
    await expect(validator.validate(await mint({ aud: 'mcp-server' }), context({ client: byId }))).resolves.toMatchObject({ audiences: ['mcp-server'] });

    const workload: AuthenticatedClient = {
      id: 'mcp-client',
      authMethod: 'spiffe_jwt',
      identity: { issuer: 'spiffe://prod.test', subject: MCP_SPIFFE_ID, audiences: [BROKER], expiresAt: new Date(Date.now() + 60_000), tokenType: 'urn:tessera:token-type:jwt-svid', claims: {}, attributes: {} },
    };
    await expect(validator.validate(await mint({ aud: [MCP_SPIFFE_ID, 'https://elsewhere.example'] }), context({ client: workload }))).resolves.toMatchObject({ subject: 'alice' });
    // A public client proves only a client_id: it is no recipient.
    await expectRefused(await mint({ aud: 'public-app' }), 'audience', context({ client: { id: 'public-app', authMethod: 'none' } }));
  });

  it('accepts only the broker as audience where the door asks for that', async () => {
    const client: AuthenticatedClient = { id: 'mcp-server', authMethod: 'private_key_jwt' };
    await expectRefused(await mint({ aud: 'mcp-server' }), 'audience', context({ client, brokerAudienceOnly: true }));
    await expect(validator.validate(await mint({ aud: BROKER }), context({ client, brokerAudienceOnly: true }))).resolves.toBeDefined();
  });

  it('refuses a token typed JWT, or untyped: only at+jwt is an access token (RFC 8725 §3.11)', async () => {
    await expectRefused(await mint({}, 'JWT'), 'type');
    const untyped = await new SignJWT(claims()).setProtectedHeader({ alg: 'ES256', kid: ring.publicJwks().keys[0]!.kid! }).sign(ringPrivateKey);
    await expectRefused(untyped, 'type');
  });

  it('never takes a key from the token: jwk, jku and x5u headers are ignored', async () => {
    const attacker = await generateTestKey('ES256');
    const header = {
      alg: 'ES256',
      typ: 'at+jwt',
      kid: attacker.kid,
      jwk: { kty: attacker.publicJwk.kty!, crv: attacker.publicJwk.crv!, x: attacker.publicJwk.x!, y: attacker.publicJwk.y! },
      jku: 'https://attacker.example/jwks.json',
      x5u: 'https://attacker.example/cert.pem',
    };
    const forged = await new SignJWT(claims()).setProtectedHeader(header).sign(attacker.privateKey);
    await expectRefused(forged, 'unknown_key');
  });

  it('refuses a crit header and algorithms outside the key ring', async () => {
    const crit = await new SignJWT(claims())
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: ring.publicJwks().keys[0]!.kid!, crit: ['x-tessera'], 'x-tessera': 1 })
      .sign(ringPrivateKey, { crit: { 'x-tessera': true } });
    await expectRefused(crit, 'malformed');
    const hmac = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).sign(new TextEncoder().encode(JSON.stringify(ring.publicJwks().keys[0])));
    await expectRefused(hmac, 'algorithm');
  });

  it('refuses garbage with InvalidToken', async () => {
    for (const garbage of ['', 'x', 'a.b.c', 'e30.e30.e30', 'eyJhbGciOiJub25lIn0.e30.', 'A'.repeat(70_000)]) {
      await expect(validator.validate(garbage, context()), JSON.stringify(garbage.slice(0, 20))).rejects.toBeInstanceOf(InvalidToken);
    }
  });
});

describe('the access-token plugin', () => {
  const deps = () => ({ keyRing: ring, revocationList: revocations });

  it('registers the validator by default, and not when acceptOwnTokens is off', async () => {
    const on = await plugin.init({ config: accessTokenConfigSchema.parse({}), deps: deps(), configDir: '.' });
    expect(on.validators?.map((provided) => provided.tokenTypes)).toEqual([[TOKEN_TYPE_ACCESS_TOKEN]]);
    const off = await plugin.init({ config: accessTokenConfigSchema.parse({ acceptOwnTokens: false }), deps: deps(), configDir: '.' });
    expect(off.validators).toBeUndefined();
    expect(off.issuers).toHaveLength(1);
  });

  it('describes acceptOwnTokens in its schema', () => {
    expect(accessTokenConfigSchema.shape.acceptOwnTokens.description).toMatch(/this broker issued/);
  });
});

