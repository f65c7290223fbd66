import { afterEach, describe, expect, it } from 'vitest';
import { accessTokenPlugin, allowRule, API, generateTestKey, ID_TOKEN, LoopbackIssuer, oidcPlugin, postToken, startBroker, TestClient, TOKEN_EXCHANGE, type RunningBroker } from './support.js';

/** A clock the test moves forward; starts at real time so tokens minted now are valid. */
function steppingClock() {
  let offset = 0;
  return { now: () => new Date(Date.now() + offset), advance: (ms: number) => void (offset += ms) };
}

describe('issuer JWKS through the broker', () => {
  const open: { close(): Promise<void> }[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((item) => item.close()));
  });

  const jwksOptions = { cooldownMs: 30_000, maxAgeMs: 300_000, minBackoffMs: 1_000, maxBackoffMs: 60_000 };

  async function setup(jwks: Partial<typeof jwksOptions> = {}) {
    const idp = await LoopbackIssuer.start();
    const client = await TestClient.create();
    const clock = steppingClock();
    const running: RunningBroker = await startBroker(
      () => ({ clients: [client.config()], plugins: [oidcPlugin({ issuer: idp.issuer }), accessTokenPlugin], policy: { rules: [allowRule(idp.issuer)] } }),
      { clock, jwks: { ...jwksOptions, ...jwks } },
    );
    open.push(running, idp);
    return { idp, client, clock, running };
  }

  const exchange = async (ctx: { running: RunningBroker; client: TestClient }, subjectToken: string) =>
    postToken(ctx.running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: subjectToken,
      subject_token_type: ID_TOKEN,
      audience: API,
      ...(await ctx.client.auth(ctx.running.tokenEndpoint)),
    });

  it('picks up a rotated key on unknown kid, but not before the cool-down', async () => {
    const ctx = await setup();
    const { idp, clock } = ctx;
    expect((await exchange(ctx, await idp.mint({ sub: 'a', aud: ctx.running.issuer }))).status).toBe(200);
    const fetchesBefore = idp.jwksFetches;

    await idp.rotate();
    const rotated = await idp.mint({ sub: 'a', aud: ctx.running.issuer });
    const early = await exchange(ctx, rotated);
    expect(early.status).toBe(400);
    expect(idp.jwksFetches).toBe(fetchesBefore);

    clock.advance(31_000);
    expect((await exchange(ctx, rotated)).status).toBe(200);
    expect(idp.jwksFetches).toBe(fetchesBefore + 1);
  });

  it('keeps serving known keys through an issuer outage', async () => {
    const ctx = await setup({ maxAgeMs: 10_000, cooldownMs: 5_000 });
    const { idp, clock } = ctx;
    const token = () => idp.mint({ sub: 'a', aud: ctx.running.issuer }, { expiresIn: 3600 });
    expect((await exchange(ctx, await token())).status).toBe(200);
    const fetched = idp.jwksFetches;
    idp.available = false;
    clock.advance(11_000); // keys are now stale: this request is served from them while a refresh runs (and fails)
    expect((await exchange(ctx, await token())).status).toBe(200);
    await new Promise((settle) => setTimeout(settle, 50));
    expect(idp.jwksFetches).toBe(fetched + 1);
    expect((await exchange(ctx, await token())).status).toBe(200);
  });

  it('bounds fetches under an unknown-kid flood', async () => {
    const ctx = await setup();
    const { idp, clock } = ctx;
    expect((await exchange(ctx, await idp.mint({ sub: 'a', aud: ctx.running.issuer }))).status).toBe(200);
    clock.advance(31_000);
    const before = idp.jwksFetches;
    const forged = await Promise.all(
      Array.from({ length: 60 }, async () => idp.mint({ sub: 'a', aud: ctx.running.issuer }, { key: await generateTestKey('ES256') })),
    );
    const calls = await Promise.all(forged.map((token) => exchange(ctx, token)));
    expect(calls.every((call) => call.status === 400 && call.body.error === 'invalid_request')).toBe(true);
    expect(idp.jwksFetches - before).toBe(1);
  });

  it('answers 503 with Retry-After when an issuer was never reachable, and recovers', async () => {
    const ctx = await setup();
    const { clock } = ctx;
    const dark = await LoopbackIssuer.start({ path: '/dark' });
    open.push(dark);
    dark.available = false;
    const running = await startBroker(
      () => ({ clients: [ctx.client.config()], plugins: [oidcPlugin({ issuer: dark.issuer, jwksUri: dark.jwksUri }), accessTokenPlugin], policy: { rules: [allowRule(dark.issuer)] } }),
      { clock, jwks: jwksOptions },
    );
    open.push(running);
    const first = await exchange({ running, client: ctx.client }, await dark.mint({ sub: 'a', aud: running.issuer }));
    expect(first.status).toBe(503);
    expect(first.body.error).toBe('temporarily_unavailable');
    expect(Number(first.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(running.audit.records.at(-1)?.reason).toContain('jwks unavailable');

    dark.available = true;
    clock.advance(2_000);
    expect((await exchange({ running, client: ctx.client }, await dark.mint({ sub: 'a', aud: running.issuer }))).status).toBe(200);
  });

  it('is not ready until the keys of every trusted issuer were fetched once, and gets ready without traffic', async () => {
    const ctx = await setup();
    const dark = await LoopbackIssuer.start({ path: '/dark' });
    open.push(dark);
    dark.available = false;
    const running = await startBroker(
      () => ({ clients: [ctx.client.config()], plugins: [oidcPlugin({ issuer: dark.issuer, jwksUri: dark.jwksUri }), accessTokenPlugin], policy: { rules: [allowRule(dark.issuer)] } }),
      { clock: ctx.clock, jwks: jwksOptions },
    );
    open.push(running);
    const readyz = async () => {
      const response = await fetch(`${running.issuer}/readyz`);
      return { status: response.status, body: (await response.json()) as { status: string; checks?: Record<string, string> } };
    };
    expect(await readyz()).toEqual({ status: 503, body: { status: 'unavailable', checks: expect.objectContaining({ issuers: 'keys of 1 trusted issuer(s) not fetched yet', keys: 'ok' }) } });

    // The probe itself retries (within the backoff): no token request is needed to get into rotation.
    dark.available = true;
    ctx.clock.advance(2_000);
    expect(await readyz()).toMatchObject({ status: 200, body: { status: 'ready', checks: { issuers: 'ok' } } });
    // Once fetched, the keys outlive an outage: readiness does not flap with the issuer.
    dark.available = false;
    ctx.clock.advance(600_000);
    expect((await readyz()).status).toBe(200);
  });
});
