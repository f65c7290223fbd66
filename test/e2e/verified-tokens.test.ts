import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ACCESS_TOKEN, accessTokenPlugin, API, ID_TOKEN, LoopbackIssuer, oidcPlugin, postToken, startBroker, TestClient, TOKEN_EXCHANGE, type RunningBroker } from './support.js';

/**
 * Reuse of verified subject and actor tokens (limits.verifiedTokens): an agent presenting one token again
 * and again skips its signature check, never the checks that can change while it stays valid, and never
 * for another client, role or a client assertion.
 */
describe('verified token reuse', () => {
  let idp: LoopbackIssuer;
  let clientA: TestClient;
  let clientB: TestClient;
  let running: RunningBroker;
  let uncached: RunningBroker;

  beforeAll(async () => {
    idp = await LoopbackIssuer.start();
    [clientA, clientB] = await Promise.all([TestClient.create('client-a'), TestClient.create('client-b')]);
    const build = (issuer: string) => ({
      clients: [clientA.config(['token_exchange']), clientB.config(['token_exchange'])],
      plugins: [oidcPlugin({ issuer: idp.issuer }), accessTokenPlugin],
      policy: {
        rules: [
          // A token for client-a (as an MCP server would receive), which client-a exchanges onwards.
          { id: 'to-client-a', match: { issuers: [idp.issuer], subjectTokenTypes: [ID_TOKEN] }, grant: { audiences: ['client-a', API, 'https://other.example.test'], scopes: ['read'], maxLifetimeSeconds: 600 } },
          { id: 'onwards', match: { issuers: [issuer], subjectTokenTypes: [ACCESS_TOKEN] }, grant: { audiences: [API], scopes: ['read'], maxLifetimeSeconds: 300 } },
        ],
      },
    });
    running = await startBroker(build);
    uncached = await startBroker((issuer) => ({ ...build(issuer), limits: { verifiedTokens: { maxEntries: 0 } } }));
  });
  afterAll(async () => {
    await Promise.all([running?.close(), uncached?.close()]);
    await idp?.close();
  });

  const exchange = async (broker: RunningBroker, subject: string, type: string, audience: string, client: TestClient = clientA) =>
    postToken(broker.tokenEndpoint, { grant_type: TOKEN_EXCHANGE, subject_token: subject, subject_token_type: type, audience, scope: 'read', ...(await client.auth(broker.issuer)) });
  const counts = async (broker: RunningBroker) => {
    const text = await (await fetch(`${broker.issuer}/metrics`)).text();
    const read = (outcome: string) => Number(new RegExp(`tessera_verified_tokens_total\\{outcome="${outcome}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
    return { verified: read('verified'), reused: read('reused') };
  };

  it('verifies a subject token once and reuses it for the next audiences', async () => {
    const subject = await idp.mint({ sub: 'alice', aud: running.issuer });
    const before = await counts(running);
    for (const audience of [API, 'https://other.example.test', API]) expect((await exchange(running, subject, ID_TOKEN, audience)).status).toBe(200);
    const after = await counts(running);
    expect([after.verified - before.verified, after.reused - before.reused]).toEqual([1, 2]);
    // Every exchange is still audited as its own decision.
    expect(running.audit.records.slice(-3).map((record) => record.decision)).toEqual(['allow', 'allow', 'allow']);
  });

  it('verifies every presentation when turned off', async () => {
    const subject = await idp.mint({ sub: 'alice', aud: uncached.issuer });
    const before = await counts(uncached);
    for (let i = 0; i < 3; i++) expect((await exchange(uncached, subject, ID_TOKEN, API)).status).toBe(200);
    const after = await counts(uncached);
    expect([after.verified - before.verified, after.reused - before.reused]).toEqual([3, 0]);
  });

  it('does not reuse one client\'s verification for another client', async () => {
    const forA = (await exchange(running, await idp.mint({ sub: 'alice', aud: running.issuer }), ID_TOKEN, 'client-a')).body.access_token as string;
    expect((await exchange(running, forA, ACCESS_TOKEN, API)).status).toBe(200);
    expect((await exchange(running, forA, ACCESS_TOKEN, API)).status).toBe(200);
    // Its audience names client-a: client-b may not present it, reused verification or not.
    const refused = await exchange(running, forA, ACCESS_TOKEN, API, clientB);
    expect([refused.status, refused.body.error]).toEqual([400, 'invalid_request']);
  });

  it('asks the revocation list on every reuse', async () => {
    const forA = (await exchange(running, await idp.mint({ sub: 'alice', aud: running.issuer }), ID_TOKEN, 'client-a')).body.access_token as string;
    expect((await exchange(running, forA, ACCESS_TOKEN, API)).status).toBe(200);
    const revoked = await postToken(`${running.issuer}/revoke`, { token: forA, ...(await clientA.auth(running.issuer)) });
    expect(revoked.status, revoked.text).toBe(200);
    const refused = await exchange(running, forA, ACCESS_TOKEN, API);
    expect([refused.status, refused.body.error]).toEqual([400, 'invalid_request']);
  });

  it('stops reusing a verification when the token expires', async () => {
    const subject = await idp.mint({ sub: 'alice', aud: running.issuer }, { expiresIn: 2 });
    const before = await counts(running);
    expect((await exchange(running, subject, ID_TOKEN, API)).status).toBe(200);
    expect((await exchange(running, subject, ID_TOKEN, API)).status).toBe(200);
    await new Promise((done) => setTimeout(done, 2_100));
    // Past exp, inside the issuer's 60 s skew: verified afresh, not reused (and then refused, since a
    // token may not outlive its subject).
    expect((await exchange(running, subject, ID_TOKEN, API)).status).toBe(400);
    const after = await counts(running);
    expect([after.verified - before.verified, after.reused - before.reused]).toEqual([2, 1]);
  });
});
