import { tokens } from '@tessera/plugin-sdk';
import { coreTokens } from '@tessera/core';
import { afterAll, expect, it } from 'vitest';
import { accessTokenPlugin, allowRule, API, ID_TOKEN, LoopbackIssuer, oidcPlugin, postToken, startBroker, TestClient, TOKEN_EXCHANGE } from './support.js';

it('runs two brokers in one process without sharing keys, replay cache, audit or plugins', async () => {
  const idp = await LoopbackIssuer.start();
  const client = await TestClient.create();
  const build = () => ({ clients: [client.config()], plugins: [oidcPlugin({ issuer: idp.issuer }), accessTokenPlugin], policy: { rules: [allowRule(idp.issuer)] } });
  const a = await startBroker(build);
  const b = await startBroker(build);
  afterAll(async () => {
    await Promise.all([a.close(), b.close(), idp.close()]);
  });

  expect(a.broker.container).not.toBe(b.broker.container);
  expect(a.broker.resolve(tokens.keyRing)).not.toBe(b.broker.resolve(tokens.keyRing));
  expect(a.broker.resolve(tokens.replayStore)).not.toBe(b.broker.resolve(tokens.replayStore));
  expect(a.broker.resolve(coreTokens.validators)).not.toBe(b.broker.resolve(coreTokens.validators));
  expect(a.broker.resolve(tokens.keyRing).publicJwks().keys[0]!.kid).not.toBe(b.broker.resolve(tokens.keyRing).publicJwks().keys[0]!.kid);

  // The same assertion id, once for each broker (an assertion naming both is refused: it names more than
  // the broker): each broker's replay cache sees it once.
  const jti = 'one-id-for-both';
  const assertions = new Map([
    [a, await client.assertion(a.tokenEndpoint, { jti })],
    [b, await client.assertion(b.tokenEndpoint, { jti })],
  ]);
  const call = async (target: typeof a) =>
    postToken(target.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: await idp.mint({ sub: 'alice', aud: [a.issuer, b.issuer] }),
      subject_token_type: ID_TOKEN,
      audience: API,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertions.get(target)!,
    });
  const fromA = await call(a);
  const fromB = await call(b);
  expect([fromA.status, fromB.status]).toEqual([200, 200]);
  expect((await call(a)).status).toBe(401);
  expect(a.audit.records.map((record) => record.decision)).toEqual(['allow', 'deny']);
  expect(b.audit.records.map((record) => record.decision)).toEqual(['allow']);

  // A token from broker A is not a subject broker B accepts: B trusts only the configured issuer.
  const crossed = await postToken(b.tokenEndpoint, {
    grant_type: TOKEN_EXCHANGE,
    subject_token: fromA.body.access_token as string,
    subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
    audience: API,
    ...(await client.auth(b.tokenEndpoint)),
  });
  expect(crossed.status).toBe(400);
  expect(crossed.body.error).toBe('invalid_request');
});
