import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose';
import { DelegatedIdentityClient, parseSelector } from '@tessera/spiffe';
import { ACCESS_TOKEN, accessTokenPlugin, JWT, LoopbackIssuer, oidcPlugin, postToken, startBroker, TOKEN_EXCHANGE, type RunningBroker, JWT_SVID, JWT_SPIFFE } from '../e2e/support.js';
import { spireRequired, spireUnavailableReason, startSpire, type Spire } from '../src/spire.js';

const AGENT = 'spiffe://example.org/agents/assistant';
const MCP = 'spiffe://example.org/mcp/crm-tools';
const CRM_API = 'https://crm.example.test/api';
/** Selectors no local process has: their SVIDs come through the Delegated Identity API, signed by SPIRE. */
const SELECTORS = { [AGENT]: ['k8s:ns:agents', 'k8s:sa:assistant'], [MCP]: ['k8s:ns:mcp', 'k8s:sa:crm-tools'] };
const unavailable = spireUnavailableReason();

/**
 * The agentic chain with workload identities SPIRE actually issued: the agent and the MCP server each
 * prove themselves with a SPIRE JWT-SVID, as client and as actor, and the broker verifies them against the
 * bundle it streams from the agent.
 */
describe('delegation chain with SPIRE-issued JWT-SVIDs', () => {
  let spire: Spire;
  let idp: LoopbackIssuer;
  let running: RunningBroker;
  let delegated: DelegatedIdentityClient;

  beforeAll(async () => {
    if (unavailable) return;
    [spire, idp] = await Promise.all([startSpire(), LoopbackIssuer.start()]);
    for (const [id, selectors] of Object.entries(SELECTORS)) await spire.createEntry(id, selectors);
    delegated = new DelegatedIdentityClient(`unix://${spire.adminSocket}`);
    running = await startBroker((issuer) => ({
      clients: [{ id: 'spiffe://example.org/**', auth: { method: 'spiffe_jwt' } }],
      plugins: [
        oidcPlugin({ issuer: idp.issuer, jwksUri: idp.jwksUri }),
        { use: '@tessera/plugin-spiffe', config: { trustDomains: [{ name: 'example.org', bundle: { workloadApi: true } }], workloadApi: { address: `unix://${spire.workloadSocket}` } } },
        accessTokenPlugin,
      ],
      policy: {
        rules: [
          {
            id: 'agent-acts-for-user',
            match: { issuers: [idp.issuer], actor: { trust: ['workload'], subjects: ['spiffe://example.org/agents/*'] } },
            grant: { audiences: ['spiffe://example.org/mcp/*'], scopes: ['crm.read', 'crm.write'], maxLifetimeSeconds: 600, delegation: { allowed: true } },
          },
          {
            id: 'mcp-calls-crm',
            match: { issuers: [issuer], subjectTokenTypes: [ACCESS_TOKEN], actor: { subjects: ['spiffe://example.org/mcp/*'], priorActors: ['spiffe://example.org/agents/*'] } },
            grant: { audiences: [CRM_API], scopes: ['crm.read'], maxLifetimeSeconds: 600, delegation: { allowed: true } },
          },
        ],
      },
    }));
    // The entries reach the agent asynchronously: wait until SPIRE serves both.
    for (const id of [AGENT, MCP] as const) await svidFor(id, 60_000);
  }, 180_000);

  afterAll(async () => {
    delegated?.close();
    await running?.close();
    await Promise.all([spire?.stop(), idp?.close()]);
  }, 60_000);

  beforeEach((ctx) => {
    if (unavailable && spireRequired()) throw new Error(`TESSERA_REQUIRE_SPIRE=1 but ${unavailable}`);
    if (unavailable) ctx.skip(unavailable);
  });

  /** A JWT-SVID for `spiffeId`, minted by SPIRE for the broker's audience. */
  async function svidFor(spiffeId: keyof typeof SELECTORS, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const svids = await delegated.fetchJwtSvids({ audience: [running.issuer], selectors: SELECTORS[spiffeId].map(parseSelector) });
        const svid = svids.find((candidate) => candidate.spiffeId === spiffeId);
        if (svid) return svid.token;
        throw new Error(`SPIRE served no JWT-SVID for ${spiffeId}`);
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
  }

  const exchange = async (workload: keyof typeof SELECTORS, subjectToken: string, subjectTokenType: string, audience: string, scope: string) => {
    const svid = await svidFor(workload);
    const response = await postToken(running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      client_assertion_type: JWT_SPIFFE,
      client_assertion: svid,
      subject_token: subjectToken,
      subject_token_type: subjectTokenType,
      actor_token: svid,
      actor_token_type: JWT_SVID,
      audience,
      scope,
    });
    return { ...response, svidExp: decodeJwt(svid).exp! };
  };

  it('user → agent → MCP server → API, with the exact nested act', async () => {
    const user = await idp.mint({ sub: 'alice', aud: running.issuer, scope: 'crm.read crm.write' }, { expiresIn: 900 });
    const hop1 = await exchange(AGENT, user, JWT, MCP, 'crm.read crm.write');
    expect(hop1.status, hop1.text).toBe(200);
    expect(decodeJwt(hop1.body.access_token as string).act).toEqual({ sub: AGENT, iss: 'spiffe://example.org', spiffe_id: AGENT });

    const hop2 = await exchange(MCP, hop1.body.access_token as string, ACCESS_TOKEN, CRM_API, 'crm.read');
    expect(hop2.status, hop2.text).toBe(200);
    const keys = createLocalJWKSet((await (await fetch(`${running.issuer}/keys`)).json()) as { keys: [] });
    const { payload } = await jwtVerify(hop2.body.access_token as string, keys, { issuer: running.issuer, audience: CRM_API, typ: 'at+jwt' });
    expect(payload).toMatchObject({ sub: 'alice', scope: 'crm.read', client_id: MCP });
    expect(payload.act).toEqual({ sub: MCP, iss: 'spiffe://example.org', spiffe_id: MCP, act: { sub: AGENT, iss: 'spiffe://example.org', spiffe_id: AGENT } });
    // Never outlives the SPIRE SVIDs that proved the actors.
    expect(payload.exp!).toBeLessThanOrEqual(hop2.svidExp);
    expect(decodeJwt(hop1.body.access_token as string).exp!).toBeLessThanOrEqual(hop1.svidExp);
  });

  it('refuses an MCP server presenting the agent SVID as its actor', async () => {
    const user = await idp.mint({ sub: 'alice', aud: running.issuer, scope: 'crm.read' });
    const hop1 = await exchange(AGENT, user, JWT, MCP, 'crm.read');
    const response = await postToken(running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      client_assertion_type: JWT_SPIFFE,
      client_assertion: await svidFor(MCP),
      subject_token: hop1.body.access_token as string,
      subject_token_type: ACCESS_TOKEN,
      actor_token: await svidFor(AGENT),
      actor_token_type: JWT_SVID,
      audience: CRM_API,
    });
    expect([response.status, response.body.error]).toEqual([400, 'invalid_request']);
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny' });
  });
});
