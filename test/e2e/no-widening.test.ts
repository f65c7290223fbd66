import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decodeJwt } from 'jose';
import { ACCESS_TOKEN, accessTokenPlugin, JWT, LoopbackIssuer, oidcPlugin, postToken, startBroker, TestClient, TOKEN_EXCHANGE, type RunningBroker } from './support.js';

const HELD_BY_USERS = ['a', 'b', 'c', 'd'] as const;
/** Policy allows `e` as well: only the subject token's own scopes keep it out. */
const POLICY_SCOPES = [...HELD_BY_USERS, 'e'] as const;
const AUDIENCES = ['https://svc-1.example.test', 'https://svc-2.example.test', 'https://svc-3.example.test'];

/**
 * Whatever sequence of exchanges a client tries over the broker's own tokens, scope and lifetime only
 * ever shrink: each step's token holds a subset of the previous token's scopes and expires no later.
 * Requests within bounds succeed; requests beyond them get invalid_scope.
 */
describe('no sequence of exchanges widens scope or lifetime (property)', () => {
  let idp: LoopbackIssuer;
  let client: TestClient;
  let running: RunningBroker;

  beforeAll(async () => {
    idp = await LoopbackIssuer.start();
    client = await TestClient.create('svc');
    running = await startBroker((issuer) => ({
      clients: [client.config(['token_exchange'])],
      plugins: [oidcPlugin({ issuer: idp.issuer, jwksUri: idp.jwksUri }), accessTokenPlugin],
      policy: {
        rules: [
          {
            id: 'users',
            match: { issuers: [idp.issuer] },
            grant: { audiences: ['svc', 'https://svc-*.example.test'], scopes: [...POLICY_SCOPES], defaultScopes: ['a', 'b', 'e'], maxLifetimeSeconds: 3_600 },
          },
          {
            id: 're-exchange',
            match: { issuers: [issuer], subjectTokenTypes: [ACCESS_TOKEN] },
            grant: { audiences: ['svc', 'https://svc-*.example.test'], scopes: [...POLICY_SCOPES], defaultScopes: [...POLICY_SCOPES], maxLifetimeSeconds: 3_600 },
          },
        ],
      },
    }));
  });
  afterAll(async () => {
    await running?.close();
    await idp?.close();
  });

  const step = fc.record({
    // undefined = no scope parameter (the rule's defaults apply, narrowed to what is held).
    scopes: fc.option(fc.uniqueArray(fc.constantFrom(...POLICY_SCOPES), { minLength: 1 }), { nil: undefined, freq: 2 }),
    audience: fc.constantFrom(...AUDIENCES),
  });

  it('holds for random users and random exchange sequences', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.constantFrom(...HELD_BY_USERS), { minLength: 1 }),
        fc.integer({ min: 30, max: 3_000 }),
        fc.array(step, { minLength: 1, maxLength: 4 }),
        async (userScopes, userLifetime, steps) => {
          let token = await idp.mint({ sub: 'alice', aud: running.issuer, scope: userScopes.join(' ') }, { expiresIn: userLifetime });
          let type = JWT;
          let held: ReadonlySet<string> = new Set<string>(userScopes);
          let exp = decodeJwt(token).exp!;
          for (const { scopes, audience } of steps) {
            const response = await postToken(running.tokenEndpoint, {
              grant_type: TOKEN_EXCHANGE,
              ...(await client.auth(running.issuer)),
              subject_token: token,
              subject_token_type: type,
              // The client stays in the audience so it may exchange the token again.
              audience: ['svc', audience],
              ...(scopes ? { scope: scopes.join(' ') } : {}),
            });
            const withinBounds = !scopes || scopes.every((scope) => held.has(scope));
            if (!withinBounds) {
              expect([response.status, response.body.error], response.text).toEqual([400, 'invalid_scope']);
              return;
            }
            expect(response.status, response.text).toBe(200);
            const claims = decodeJwt(response.body.access_token as string);
            const granted = typeof claims.scope === 'string' ? claims.scope.split(' ') : [];
            expect(granted.every((scope) => held.has(scope)), `${granted} within ${[...held]}`).toBe(true);
            expect(claims.exp!).toBeLessThanOrEqual(exp);
            token = response.body.access_token as string;
            type = ACCESS_TOKEN;
            held = new Set(granted);
            exp = claims.exp!;
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});
