import 'reflect-metadata';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GuardedFetcher, RemoteJwksCache, silentLogger } from '@tessera/core';
import { InvalidToken, JwtVerifier, TemporarilyUnavailable, TOKEN_TYPE_ID_TOKEN, type ValidationContext } from '@tessera/plugin-sdk';
import { LoopbackIssuer, sendJson, startLoopbackServer, type LoopbackServer } from '@tessera/plugin-testkit';
import { oidcConfigSchema } from '../src/index.js';

const BROKER = 'https://broker.example';

function context(overrides: Partial<ValidationContext> = {}): ValidationContext {
  return {
    role: 'subject',
    tokenType: TOKEN_TYPE_ID_TOKEN,
    brokerIssuer: BROKER,
    tokenEndpoint: `${BROKER}/token`,
    now: new Date(),
    signal: AbortSignal.timeout(5_000),
    ...overrides,
  };
}

function verifierFor(issuers: unknown[]) {
  const config = oidcConfigSchema.parse({ issuers });
  const http = new GuardedFetcher({ allowLoopbackHttp: true, timeoutMs: 2_000, maxResponseBytes: 65_536 });
  const clock = { now: () => new Date() };
  return new JwtVerifier(config, { http, jwks: new RemoteJwksCache(http, clock, silentLogger) });
}

async function rejection(promise: Promise<unknown>): Promise<InvalidToken> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(InvalidToken);
  return error as InvalidToken;
}

describe('JwtVerifier', () => {
  let idp: LoopbackIssuer;
  let liar: LoopbackServer;
  beforeAll(async () => {
    idp = await LoopbackIssuer.start();
    // A discovery document that claims to be another issuer.
    liar = await startLoopbackServer((request, response) => {
      if (request.url?.endsWith('/.well-known/openid-configuration')) return sendJson(response, 200, { issuer: 'https://someone-else.example', jwks_uri: idp.jwksUri });
      sendJson(response, 404, {});
    });
  });
  afterAll(async () => {
    await Promise.all([idp.close(), liar.close()]);
  });

  it('finds keys through discovery and maps only configured claims to attributes', async () => {
    const verifier = verifierFor([{ issuer: idp.issuer, attributes: { email: 'email', groups: 'groups', verified: 'email_verified' } }]);
    const token = await idp.mint({ sub: 'alice', aud: [BROKER, 'other'], email: 'a@example.test', groups: ['x', 'y'], email_verified: true, secret: 'not-mapped' });
    const { identity } = await verifier.verify(token, context());
    expect(identity).toMatchObject({
      issuer: idp.issuer,
      subject: 'alice',
      audiences: [BROKER, 'other'],
      tokenType: TOKEN_TYPE_ID_TOKEN,
      attributes: { email: 'a@example.test', groups: ['x', 'y'], verified: 'true' },
    });
    expect(identity.attributes).not.toHaveProperty('secret');
    expect(JSON.parse(JSON.stringify(identity.claims))).toEqual(identity.claims);
    expect(idp.discoveryFetches).toBe(1);
  });

  it('maps nested claims through JSON Pointers, as Kubernetes tokens need', async () => {
    const verifier = verifierFor([
      { issuer: idp.issuer, jwksUri: idp.jwksUri, attributes: { 'k8s.namespace': '/kubernetes.io/namespace', 'k8s.serviceAccount': '/kubernetes.io/serviceaccount/name', slash: '/a~1b', missing: '/kubernetes.io/nope', proto: '/__proto__/x' } },
    ]);
    const token = await idp.mint({ sub: 'system:serviceaccount:payments:api', aud: BROKER, 'kubernetes.io': { namespace: 'payments', serviceaccount: { name: 'api', uid: 'u-1' } }, 'a/b': 'slashed' });
    const { identity } = await verifier.verify(token, context());
    expect(identity.attributes).toEqual({ 'k8s.namespace': 'payments', 'k8s.serviceAccount': 'api', slash: 'slashed' });
  });

  it('accepts the token endpoint or an allowed audience in place of the issuer', async () => {
    const verifier = verifierFor([{ issuer: idp.issuer, jwksUri: idp.jwksUri, allowedAudiences: ['tessera'] }]);
    await expect(verifier.verify(await idp.mint({ sub: 'a', aud: `${BROKER}/token` }), context())).resolves.toBeDefined();
    await expect(verifier.verify(await idp.mint({ sub: 'a', aud: 'tessera' }), context())).resolves.toBeDefined();
    expect((await rejection(verifier.verify(await idp.mint({ sub: 'a', aud: 'tessera-2' }), context()))).reason).toBe('audience');
  });

  it('refuses an issuer whose discovery document names another issuer', async () => {
    const issuer = `${liar.url}/idp`;
    const verifier = verifierFor([{ issuer }]);
    const token = await idp.mint({ sub: 'a', aud: BROKER, iss: issuer });
    expect((await rejection(verifier.verify(token, context()))).reason).toBe('untrusted_issuer');
  });

  it('discovers once for warm-up and tokens alike, and reports a dark issuer as an outage (503), not a bad token', async () => {
    const fresh = await LoopbackIssuer.start({ path: '/fresh' });
    try {
      const verifier = verifierFor([{ issuer: fresh.issuer }]);
      expect(await verifier.warm()).toEqual([{ issuer: fresh.issuer, ok: true }]);
      await verifier.verify(await fresh.mint({ sub: 'a', aud: BROKER }), context());
      expect(fresh.discoveryFetches).toBe(1);

      const dark = verifierFor([{ issuer: fresh.issuer }]);
      fresh.available = false;
      const before = fresh.discoveryFetches;
      const token = await fresh.mint({ sub: 'a', aud: BROKER });
      const errors = await Promise.all(Array.from({ length: 50 }, () => dark.verify(token, context()).catch((caught: unknown) => caught)));
      for (const error of errors) expect(error).toBeInstanceOf(TemporarilyUnavailable);
      expect((errors[0] as TemporarilyUnavailable).headers['Retry-After']).toEqual(expect.any(String));
      await dark.verify(token, context()).catch(() => undefined);
      // One fetch for the whole burst and the request after it: the failure is cached for its backoff.
      expect(fresh.discoveryFetches - before).toBe(1);
    } finally {
      await fresh.close();
    }
  });

  it('requires a non-empty sub', async () => {
    const verifier = verifierFor([{ issuer: idp.issuer, jwksUri: idp.jwksUri }]);
    expect((await rejection(verifier.verify(await idp.mint({ aud: BROKER }), context()))).reason).toBe('claims');
    expect((await rejection(verifier.verify(await idp.mint({ sub: '', aud: BROKER }), context()))).reason).toBe('claims');
  });

  it('uses the validation clock, with bounded skew', async () => {
    const verifier = verifierFor([{ issuer: idp.issuer, jwksUri: idp.jwksUri, clockSkewSeconds: 30 }]);
    const token = await idp.mint({ sub: 'a', aud: BROKER }, { expiresIn: 60 });
    await expect(verifier.verify(token, context({ now: new Date(Date.now() + 80_000) }))).resolves.toBeDefined();
    expect((await rejection(verifier.verify(token, context({ now: new Date(Date.now() + 100_000) })))).reason).toBe('expired');
  });
});

describe('oidc config schema', () => {
  it('refuses HMAC algorithms, plain-HTTP JWKS off loopback, and duplicate issuers', () => {
    expect(oidcConfigSchema.safeParse({ issuers: [{ issuer: 'https://a', algorithms: ['HS256'] }] }).success).toBe(false);
    expect(oidcConfigSchema.safeParse({ issuers: [{ issuer: 'https://a', jwksUri: 'http://a.example/jwks' }] }).success).toBe(false);
    expect(oidcConfigSchema.safeParse({ issuers: [{ issuer: 'https://a' }, { issuer: 'https://a' }] }).success).toBe(false);
    expect(oidcConfigSchema.safeParse({ issuers: [] }).success).toBe(false);
  });
});
