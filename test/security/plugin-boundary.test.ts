import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '@tessera/core';
import { ECHO_ISSUER, TOKEN_TYPE_CONTRACT_ECHO } from '@tessera/plugin-testkit/contract';
import { accessTokenPlugin, API, JWT, JWT_BEARER, postToken, startBroker, TOKEN_EXCHANGE, type RunningBroker } from '../e2e/support.js';
import { expectRefused } from './refusal.js';

/**
 * Catalogue: the plugin boundary. What core guarantees whatever a third-party plugin does: identity
 * invariants, the services a plugin can reach, and actor trust granted by the operator only.
 */
const fixtures = { baseDir: import.meta.dirname };
const lax = { use: './fixtures/lax-validator.mjs' };
// allowLifetimeBeyondSubject: an identity inside its skew is already past exp, which would otherwise bound the grant.
const anyRule = { id: 'any', match: {}, grant: { audiences: [API], defaultAudiences: [API], allowLifetimeBeyondSubject: true } };

describe('identity invariants are core checks, not trust in the plugin', () => {
  let running: RunningBroker;
  beforeAll(async () => {
    running = await startBroker(
      () => ({
        clients: [
          { id: 'public', auth: { method: 'none' }, grantTypes: ['token_exchange', 'jwt_bearer'] },
          { id: 'spiffe://example.org/**', auth: { method: 'spiffe_jwt' }, grantTypes: ['client_credentials'] },
        ],
        plugins: [lax, accessTokenPlugin],
        policy: { rules: [anyRule] },
      }),
      fixtures,
    );
  });
  afterAll(() => running?.close());

  const exchange = (token: string) => postToken(running.tokenEndpoint, { grant_type: TOKEN_EXCHANGE, client_id: 'public', subject_token: token, subject_token_type: JWT, audience: API });
  const bearer = (token: string) => postToken(running.tokenEndpoint, { grant_type: JWT_BEARER, client_id: 'public', assertion: token, audience: API });

  it('issues for a sound identity, and within the skew the plugin declared', async () => {
    const good = await exchange('good');
    expect(good.status, JSON.stringify(running.audit.records.at(-1))).toBe(200);
    expect((await exchange('withinSkew')).status).toBe(200);
  });

  it.each([
    ['expired', 'subject: expired: past expiry (checked by core)'],
    ['pastSkew', 'subject: expired: past expiry (checked by core)'],
    ['emptyIssuer', 'subject: validator plugin fault'],
    ['emptySubject', 'subject: validator plugin fault'],
    ['otherType', 'subject: validator plugin fault'],
  ])('refuses a %s identity whatever the plugin says', async (token, reason) => {
    expectRefused(await exchange(token), 400, 'invalid_request');
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', reason });
  });

  it('refuses a JWT bearer assertion whose identity does not name the broker, though the plugin accepted it', async () => {
    expect((await bearer('good')).status).toBe(200);
    // As a subject token the same identity is acceptable: only the grant demands the broker.
    expect((await exchange('foreignAudience')).status).toBe(200);
    expectRefused(await bearer('foreignAudience'), 400, 'invalid_grant');
    expect(running.audit.records.at(-1)).toMatchObject({ reason: 'assertion: audience: does not name this broker (checked by core)' });
  });

  it('refuses an expired client assertion identity from a plugin verifier', async () => {
    const authenticate = (assertion: string) =>
      postToken(running.tokenEndpoint, { grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe', client_assertion: assertion, audience: API });
    expect((await authenticate('fresh')).status).toBe(200);
    expectRefused(await authenticate('expired'), 401, 'invalid_client');
  });
});

describe('plugins reach only the services the SDK documents', () => {
  it('refuses at startup a plugin asking for a core-only token, naming the plugin and the token', async () => {
    const error = await startBroker(() => ({ plugins: [{ use: './fixtures/nosy-plugin.mjs' }, accessTokenPlugin] }), fixtures).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([expect.stringMatching(/^plugins\[0\]: plugin "nosy-plugin": deps\.config asks for tessera\.config, which is not a plugin service/)]);
  });
});

describe('actor trust is the operator’s grant', () => {
  const agent = { use: './fixtures/self-trusting-validator.mjs' };
  const AGENT = 'urn:example:token-type:agent';
  const delegationRule = { id: 'delegate', match: {}, grant: { audiences: [API], defaultAudiences: [API], delegation: { allowed: true, actorMustBeClient: false } } };
  const build = (delegation: Record<string, unknown>) => () => ({
    clients: [{ id: 'public', auth: { method: 'none' } }],
    plugins: [lax, agent, accessTokenPlugin],
    delegation,
    policy: { rules: [delegationRule] },
  });
  const delegate = (broker: RunningBroker) =>
    postToken(broker.tokenEndpoint, { grant_type: TOKEN_EXCHANGE, client_id: 'public', subject_token: 'good', subject_token_type: JWT, actor_token: 'agent-1', actor_token_type: AGENT, audience: API });

  it('a plugin that declares workload trust about itself is not trusted to act without a grant', async () => {
    const broker = await startBroker(build({}), fixtures);
    try {
      expectRefused(await delegate(broker), 400, 'invalid_request');
      expect(broker.audit.records.at(-1)).toMatchObject({ reason: 'actor: actor_not_trusted' });
    } finally {
      await broker.close();
    }
  });

  it('acts once the operator grants it', async () => {
    const broker = await startBroker(build({ actorTrust: { 'self-trusting': 'workload' } }), fixtures);
    try {
      const response = await delegate(broker);
      expect(response.status, response.text).toBe(200);
    } finally {
      await broker.close();
    }
  });

  it.each([
    [{ 'no-such-plugin': 'workload' }, 'delegation.actorTrust.no-such-plugin: no plugin "no-such-plugin" is loaded'],
    [{ 'self-trusting': 'broker' }, 'delegation.actorTrust.self-trusting: plugin "self-trusting" has no validator that supports broker trust'],
    [{ 'lax-validator': 'workload' }, 'delegation.actorTrust.lax-validator: plugin "lax-validator" has no validator that supports workload trust'],
  ])('stops startup on a grant a plugin cannot support: %j', async (actorTrust, problem) => {
    const error = await startBroker(build({ actorTrust }), fixtures).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([problem]);
  });

  it('goes by the package the config loads, not the name a plugin gives itself', async () => {
    const broker = await startBroker(
      () => ({
        clients: [{ id: 'public', auth: { method: 'none' } }],
        // Named `spiffe` and `access-token`, loaded from files: the built-ins' default trust is not theirs.
        plugins: [lax, { use: './fixtures/impostor-spiffe.mjs' }, { use: './fixtures/impostor-access-token.mjs' }, ECHO_ISSUER],
        policy: { rules: [delegationRule] },
      }),
      fixtures,
    );
    try {
      const asActor = await postToken(broker.tokenEndpoint, {
        grant_type: TOKEN_EXCHANGE,
        client_id: 'public',
        subject_token: 'good',
        subject_token_type: JWT,
        actor_token: 'evil',
        actor_token_type: 'urn:example:token-type:fake-svid',
        requested_token_type: TOKEN_TYPE_CONTRACT_ECHO,
        audience: API,
      });
      expectRefused(asActor, 400, 'invalid_request');
      expect(broker.audit.records.at(-1)).toMatchObject({ reason: 'actor: actor_not_trusted' });
      // An identity carrying the broker's issuer from anything but the broker's own token validator.
      const forged = await postToken(broker.tokenEndpoint, {
        grant_type: TOKEN_EXCHANGE,
        client_id: 'public',
        subject_token: 'alice',
        subject_token_type: 'urn:example:token-type:fake-broker',
        requested_token_type: TOKEN_TYPE_CONTRACT_ECHO,
        audience: API,
      });
      expectRefused(forged, 400, 'invalid_request');
      expect(broker.audit.records.at(-1)!.reason).toContain('untrusted_issuer');
    } finally {
      await broker.close();
    }
  });

  it("an explicit list without the access-token plugin stops its tokens acting, not being exchanged", async () => {
    const broker = await startBroker(
      (issuer) => ({
        clients: [{ id: 'public', auth: { method: 'none' } }],
        plugins: [lax, accessTokenPlugin],
        delegation: { actorTrust: {} },
        policy: {
          rules: [
            { id: 'to-broker', match: { validators: ['lax-validator'] }, grant: { audiences: [issuer], defaultAudiences: [issuer] } },
            { id: 'onwards', match: { validators: ['access-token'] }, grant: { audiences: [API], defaultAudiences: [API] } },
          ],
        },
      }),
      fixtures,
    );
    try {
      const first = await postToken(broker.tokenEndpoint, { grant_type: TOKEN_EXCHANGE, client_id: 'public', subject_token: 'good', subject_token_type: JWT });
      expect(first.status, first.text).toBe(200);
      const onwards = await postToken(broker.tokenEndpoint, {
        grant_type: TOKEN_EXCHANGE,
        client_id: 'public',
        subject_token: first.body.access_token as string,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      });
      expect(onwards.status, onwards.text).toBe(200);
    } finally {
      await broker.close();
    }
  });
});
