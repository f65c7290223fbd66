import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { generatePrivateJwk, LocalKeyRing, loadKeyRing, silentLogger } from '@tessera/core';
import { TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT, type Grant, type KeyRing } from '@tessera/plugin-sdk';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { accessTokenConfigSchema, JwtAccessTokenIssuer } from '../src/index.js';

const BROKER = 'https://broker.example';

async function keyRing(alg: 'ES256' | 'EdDSA' | 'RS256'): Promise<LocalKeyRing> {
  const dir = await mkdtemp(join(tmpdir(), 'tessera-at-'));
  await writeFile(join(dir, 'key.jwk'), JSON.stringify(await generatePrivateJwk(alg)));
  return loadKeyRing({ algorithm: alg, files: [{ path: 'key.jwk' }], generate: false }, { baseDir: dir, dataDir: '.', log: silentLogger });
}

function grant(overrides: Partial<Grant> = {}): Grant {
  return {
    grantType: 'urn:ietf:params:oauth:grant-type:token-exchange',
    client: { id: 'client-a', authMethod: 'private_key_jwt' },
    subject: {
      issuer: 'https://idp.example',
      subject: 'alice',
      audiences: [BROKER],
      expiresAt: new Date(Date.now() + 3_600_000),
      tokenType: TOKEN_TYPE_ID_TOKEN,
      claims: {},
      attributes: {},
    },
    audiences: ['https://api.example'],
    scopes: ['read', 'write'],
    lifetimeSeconds: 600,
    tokenType: TOKEN_TYPE_ACCESS_TOKEN,
    ruleId: 'r1',
    parameters: {},
    ...overrides,
  };
}

describe('RFC 9068 access-token issuer', () => {
  it.each(['ES256', 'EdDSA', 'RS256'] as const)('issues an at+jwt with every required claim (%s)', async (alg) => {
    const ring = await keyRing(alg);
    const issuer = new JwtAccessTokenIssuer(accessTokenConfigSchema.parse({}), ring);
    const now = new Date();
    const issued = await issuer.issue(grant(), { brokerIssuer: BROKER, now, signal: AbortSignal.timeout(1_000) });
    expect(issued).toMatchObject({ issuedTokenType: TOKEN_TYPE_ACCESS_TOKEN, tokenType: 'Bearer', expiresIn: 600 });
    const { payload, protectedHeader } = await jwtVerify(issued.token, createLocalJWKSet(ring.publicJwks()), {
      issuer: BROKER,
      audience: 'https://api.example',
      typ: 'at+jwt',
      algorithms: [alg],
      currentDate: now,
    });
    expect(protectedHeader.kid).toBe(ring.publicJwks().keys[0]!.kid);
    expect(payload).toEqual({
      iss: BROKER,
      sub: 'alice',
      aud: 'https://api.example',
      iat: Math.floor(now.getTime() / 1000),
      exp: Math.floor(now.getTime() / 1000) + 600,
      jti: issued.jti,
      client_id: 'client-a',
      scope: 'read write',
    });
  });

  it('caps the lifetime at its own maximum and omits an empty scope; several audiences become an array', async () => {
    const issuer = new JwtAccessTokenIssuer(accessTokenConfigSchema.parse({ maxLifetimeSeconds: 120 }), await keyRing('ES256'));
    const issued = await issuer.issue(grant({ scopes: [], audiences: ['a', 'b'] }), { brokerIssuer: BROKER, now: new Date(), signal: AbortSignal.timeout(1_000) });
    expect(issued.expiresIn).toBe(120);
    const claims = JSON.parse(Buffer.from(issued.token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
    expect(claims.aud).toEqual(['a', 'b']);
    expect(claims).not.toHaveProperty('scope');
  });

  it('carries the delegation chain and policy-mapped claims', async () => {
    const issuer = new JwtAccessTokenIssuer(accessTokenConfigSchema.parse({}), await keyRing('ES256'));
    const act = { sub: 'spiffe://prod.test/mcp', iss: 'spiffe://prod.test', spiffe_id: 'spiffe://prod.test/mcp', act: { sub: 'spiffe://prod.test/agent' } };
    const issued = await issuer.issue(grant({ act, claims: { email: 'alice@example.test', groups: ['a', 'b'] } }), { brokerIssuer: BROKER, now: new Date(), signal: AbortSignal.timeout(1_000) });
    expect(decodeJwt(issued.token)).toMatchObject({ sub: 'alice', act, email: 'alice@example.test', groups: ['a', 'b'] });
    const plain = decodeJwt((await issuer.issue(grant(), { brokerIssuer: BROKER, now: new Date(), signal: AbortSignal.timeout(1_000) })).token);
    expect(plain).not.toHaveProperty('act');
    expect(plain).not.toHaveProperty('email');
  });

  it('never lets mapped claims replace a registered claim', async () => {
    const issuer = new JwtAccessTokenIssuer(accessTokenConfigSchema.parse({}), await keyRing('ES256'));
    const now = new Date();
    const act = { sub: 'spiffe://prod.test/agent' };
    const hostile = Object.fromEntries(
      ['iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti', 'client_id', 'scope', 'scp', 'act', 'may_act', 'cnf'].map((name) => [name, `evil-${name}`]),
    );
    const issued = await issuer.issue(grant({ act, claims: { ...hostile, team: 'platform' } }), { brokerIssuer: BROKER, now, signal: AbortSignal.timeout(1_000) });
    const iat = Math.floor(now.getTime() / 1000);
    expect(decodeJwt(issued.token)).toEqual({
      iss: BROKER,
      sub: 'alice',
      aud: 'https://api.example',
      iat,
      exp: iat + 600,
      jti: issued.jti,
      client_id: 'client-a',
      scope: 'read write',
      act,
      team: 'platform',
    });
  });

  it('previews exactly the claims it signs, without jti, signing nothing', async () => {
    const ring = await keyRing('ES256');
    let signed = 0;
    const counting: KeyRing = {
      sign: (claims, options) => {
        signed++;
        return ring.sign(claims, options);
      },
      publicJwks: () => ring.publicJwks(),
      verifier: () => ring.verifier(),
      algorithms: ring.algorithms,
    };
    const issuer = new JwtAccessTokenIssuer(accessTokenConfigSchema.parse({ maxLifetimeSeconds: 300 }), counting);
    const now = new Date();
    const granted = grant({ act: { sub: 'svc', iss: 'https://idp.example' }, claims: { email: 'alice@example.test', sub: 'evil' } });
    const preview = issuer.preview(granted, { brokerIssuer: BROKER, now });
    expect(signed).toBe(0);
    const issued = await issuer.issue(granted, { brokerIssuer: BROKER, now, signal: AbortSignal.timeout(1_000) });
    expect(signed).toBe(1);
    const { jti, ...claims } = decodeJwt(issued.token);
    expect(jti).toBe(issued.jti);
    expect(preview).toEqual(claims);
    expect(preview).toMatchObject({ exp: Math.floor(now.getTime() / 1000) + 300, sub: 'alice' });
  });

  it('answers for the jwt token type only when configured to', async () => {
    const ring = await keyRing('ES256');
    expect(new JwtAccessTokenIssuer(accessTokenConfigSchema.parse({}), ring).tokenTypes).toEqual([TOKEN_TYPE_ACCESS_TOKEN]);
    expect(new JwtAccessTokenIssuer(accessTokenConfigSchema.parse({ issueAsJwtType: true }), ring).tokenTypes).toEqual([TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT]);
  });
});
