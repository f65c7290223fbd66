import { createRemoteJWKSet, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoopbackIssuer } from '../src/index.js';

describe('LoopbackIssuer', () => {
  let idp: LoopbackIssuer;
  beforeAll(async () => {
    idp = await LoopbackIssuer.start({ path: '/idp', routes: { '/extra': () => ({ ok: true }) } });
  });
  afterAll(() => idp.close());

  it('serves discovery and a JWKS that verify its tokens', async () => {
    const discovery = (await (await fetch(`${idp.issuer}/.well-known/openid-configuration`)).json()) as { issuer: string; jwks_uri: string };
    expect(discovery.issuer).toBe(idp.issuer);
    const token = await idp.mint({ sub: 'a', aud: 'x' });
    const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(discovery.jwks_uri)), { issuer: idp.issuer, audience: 'x' });
    expect(payload.sub).toBe('a');
    expect(await (await fetch(`${new URL(idp.issuer).origin}/extra`)).json()).toEqual({ ok: true });
  });

  it('rotates keys, keeps the old one published unless told, and counts fetches even when dark', async () => {
    const old = idp.key;
    const next = await idp.rotate();
    let jwks = (await (await fetch(idp.jwksUri)).json()) as { keys: { kid: string }[] };
    expect(jwks.keys.map((key) => key.kid)).toEqual([next.kid, old.kid]);
    await idp.rotate({ dropOld: true });
    jwks = (await (await fetch(idp.jwksUri)).json()) as { keys: { kid: string }[] };
    expect(jwks.keys).toHaveLength(1);
    const before = idp.jwksFetches;
    idp.available = false;
    expect((await fetch(idp.jwksUri)).status).toBe(503);
    idp.available = true;
    expect(idp.jwksFetches).toBe(before + 1);
  });
});
