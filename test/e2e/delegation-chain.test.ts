import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLocalJWKSet, decodeJwt, jwtVerify, SignJWT, type JWTPayload } from 'jose';
import type { TestKey } from '@tessera/plugin-testkit';
import { coreTokens } from '@tessera/core';
import { ACCESS_TOKEN, accessTokenPlugin, generateTestKey, JWT, LoopbackIssuer, oidcPlugin, postToken, startBroker, TOKEN_EXCHANGE, type RunningBroker, JWT_SVID, JWT_SPIFFE } from './support.js';

const TD = 'spiffe://prod.test';
const AGENT = `${TD}/agent`;
const MCP = `${TD}/mcp`;
/** The downstream API is a workload too: tokens for it name its SPIFFE ID. */
const DOWNSTREAM = `${TD}/files-api`;

/**
 * The agentic chain: a user's token reaches an agent, which calls an MCP server, which calls a downstream
 * API. Each workload proves itself with its JWT-SVID, both as client and as actor; each hop narrows.
 */
describe('three-hop delegation chain', () => {
  let idp: LoopbackIssuer;
  let trustDomainKey: TestKey;
  let running: RunningBroker;

  beforeAll(async () => {
    idp = await LoopbackIssuer.start();
    trustDomainKey = await generateTestKey('ES256');
    const dir = await mkdtemp(join(tmpdir(), 'tessera-delegation-'));
    const { alg: _alg, use: _use, ...jwk } = trustDomainKey.publicJwk;
    await writeFile(join(dir, 'bundle.json'), JSON.stringify({ keys: [{ ...jwk, use: 'jwt-svid' }] }));
    running = await startBroker((issuer) => ({
      clients: [{ id: `${TD}/*`, auth: { method: 'spiffe_jwt' }, grantTypes: ['token_exchange'] }],
      delegation: { maxChainDepth: 2 },
      plugins: [
        oidcPlugin({ issuer: idp.issuer, jwksUri: idp.jwksUri }),
        { use: '@tessera/plugin-spiffe', config: { trustDomains: [{ name: 'prod.test', bundle: { file: join(dir, 'bundle.json') } }] } },
        accessTokenPlugin,
      ],
      policy: {
        rules: [
          {
            id: 'agent-acts-for-users',
            match: { issuers: [idp.issuer], clients: [AGENT], actor: { trust: ['workload'], subjects: [AGENT] } },
            grant: { audiences: [MCP], scopes: ['tools:read', 'tools:write', 'files:admin'], maxLifetimeSeconds: 600, delegation: { allowed: true }, claims: { copy: ['email'] } },
          },
          {
            id: 'mcp-calls-files-api',
            match: { issuers: [issuer], subjectTokenTypes: [ACCESS_TOKEN], clients: [MCP], actor: { subjects: [MCP], priorActors: [AGENT] } },
            grant: { audiences: [DOWNSTREAM], scopes: ['tools:read', 'tools:write'], maxLifetimeSeconds: 600, delegation: { allowed: true }, claims: { copy: ['email'] } },
          },
          {
            id: 'files-api-impersonates-only',
            match: { issuers: [issuer, idp.issuer], clients: [DOWNSTREAM] },
            grant: { audiences: ['https://**'], scopes: ['tools:read'] },
          },
        ],
      },
    }));
  });
  afterAll(async () => {
    await running?.close();
    await idp?.close();
  });

  const svid = (spiffeId: string, claims: JWTPayload = {}, lifetime = 300) => {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ sub: spiffeId, aud: running.issuer, iat: now, exp: now + lifetime, ...claims })
      .setProtectedHeader({ alg: 'ES256', kid: trustDomainKey.kid, typ: 'JWT' })
      .sign(trustDomainKey.privateKey);
  };
  const userToken = (claims: JWTPayload = {}) => idp.mint({ sub: 'alice', aud: running.issuer, email: 'alice@example.test', scope: 'tools:read tools:write files:read', ...claims }, { expiresIn: 900 });

  type Subject = { token: string; type: string };
  /** A workload, authenticated by its SVID, exchanges `subject`. */
  const asClient = async (workload: string, subject: Subject, fields: Record<string, string>) =>
    postToken(running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      client_assertion_type: JWT_SPIFFE,
      client_assertion: await svid(workload),
      subject_token: subject.token,
      subject_token_type: subject.type,
      ...fields,
    });
  /** Delegation: the workload is also the actor, with its own SVID (unless `fields` say otherwise). */
  const exchange = async (workload: string, subject: Subject, fields: Record<string, string> = {}) =>
    asClient(workload, subject, { actor_token: await svid(workload), actor_token_type: JWT_SVID, ...fields });
  /** Impersonation: no actor token. */
  const impersonate = (workload: string, subject: Subject, audience: string) => asClient(workload, subject, { audience });

  const brokerKeys = async () => createLocalJWKSet((await (await fetch(`${running.issuer}/keys`)).json()) as { keys: [] });

  it('records the exact nested act and narrows at each hop', async () => {
    const user = await userToken();
    const userExp = decodeJwt(user).exp!;

    // Hop 1: the agent acts for the user towards the MCP server.
    const hop1 = await exchange(AGENT, { token: user, type: JWT }, { audience: MCP, scope: 'tools:read tools:write' });
    expect(hop1.status, hop1.text).toBe(200);
    const toMcp = decodeJwt(hop1.body.access_token as string);
    expect(toMcp).toMatchObject({ sub: 'alice', aud: MCP, scope: 'tools:read tools:write', client_id: AGENT, email: 'alice@example.test' });
    expect(toMcp.act).toEqual({ sub: AGENT, iss: TD, spiffe_id: AGENT });
    expect(toMcp.exp!).toBeLessThanOrEqual(userExp);

    // Hop 2: the MCP server, the token's audience, acts for the user towards the files API.
    const hop2 = await exchange(MCP, { token: hop1.body.access_token as string, type: ACCESS_TOKEN }, { audience: DOWNSTREAM, scope: 'tools:read' });
    expect(hop2.status, hop2.text).toBe(200);

    // Hop 3: the downstream API verifies with the broker's published keys and reads the whole chain.
    const { payload, protectedHeader } = await jwtVerify(hop2.body.access_token as string, await brokerKeys(), { issuer: running.issuer, audience: DOWNSTREAM, typ: 'at+jwt' });
    expect(protectedHeader.typ).toBe('at+jwt');
    expect(payload).toMatchObject({ sub: 'alice', scope: 'tools:read', client_id: MCP, email: 'alice@example.test' });
    expect(payload.act).toEqual({ sub: MCP, iss: TD, spiffe_id: MCP, act: { sub: AGENT, iss: TD, spiffe_id: AGENT } });
    expect(payload.exp!).toBeLessThanOrEqual(toMcp.exp!);

    const record = running.audit.records.at(-1)!;
    expect(record).toMatchObject({ decision: 'allow', ruleId: 'mcp-calls-files-api', subject: { subject: 'alice', issuer: running.issuer }, actor: { subject: MCP } });
    expect(record.actorChain).toEqual([
      { sub: MCP, iss: TD, spiffe_id: MCP },
      { sub: AGENT, iss: TD, spiffe_id: AGENT },
    ]);
  });

  describe('refusals', () => {
    const hop1Token = async (scope = 'tools:read tools:write') => {
      const response = await exchange(AGENT, { token: await userToken(), type: JWT }, { audience: MCP, scope });
      expect(response.status, response.text).toBe(200);
      return response.body.access_token as string;
    };
    const expectRefused = (response: Awaited<ReturnType<typeof postToken>>, error: string, reason: RegExp | string) => {
      expect([response.status, response.body.error], response.text).toEqual([error === 'invalid_client' ? 401 : 400, error]);
      expect(response.headers.get('cache-control')).toBe('no-store');
      const record = running.audit.records.at(-1)!;
      expect(record.decision).toBe('deny');
      if (typeof reason === 'string') expect(record.reason).toBe(reason);
      else expect(record.reason).toMatch(reason);
    };

    it('a kill-switch entry for a prior actor in the chain, or for the subject token itself', async () => {
      const killSwitch = running.broker.resolve(coreTokens.killSwitch);
      const inAMinute = () => ({ expiresAt: new Date(Date.now() + 60_000) });
      const token = await hop1Token();
      await killSwitch.add({ kind: 'spiffe-prefix', value: `${TD}/agent` }, inAMinute());
      try {
        const refused = await exchange(MCP, { token, type: ACCESS_TOKEN }, { audience: DOWNSTREAM, scope: 'tools:read' });
        expectRefused(refused, 'invalid_request', 'kill switch: spiffe-prefix entry');
        expect(refused.body).not.toHaveProperty('access_token');
      } finally {
        await killSwitch.remove({ kind: 'spiffe-prefix', value: `${TD}/agent` });
      }
      await killSwitch.add({ kind: 'jti', value: decodeJwt(token).jti! }, inAMinute());
      expectRefused(await exchange(MCP, { token, type: ACCESS_TOKEN }, { audience: DOWNSTREAM, scope: 'tools:read' }), 'invalid_request', 'kill switch: jti entry');
      const fresh = await exchange(MCP, { token: await hop1Token(), type: ACCESS_TOKEN }, { audience: DOWNSTREAM, scope: 'tools:read' });
      expect(fresh.status, fresh.text).toBe(200);
    });

    it('an external JWT as actor', async () => {
      const external = await idp.mint({ sub: AGENT, aud: running.issuer });
      const response = await exchange(AGENT, { token: await userToken(), type: JWT }, { actor_token: external, actor_token_type: JWT, audience: MCP });
      expectRefused(response, 'invalid_request', 'actor: actor_not_trusted');
      expect(response.body.error_description).toBe('actor_token is invalid or not acceptable');
    });

    it('a may_act that names someone else', async () => {
      const response = await exchange(AGENT, { token: await userToken({ may_act: { sub: `${TD}/someone-else` } }), type: JWT }, { audience: MCP });
      expectRefused(response, 'invalid_request', 'delegation: may_act_mismatch');
      const allowed = await exchange(AGENT, { token: await userToken({ may_act: { sub: AGENT } }), type: JWT }, { audience: MCP });
      expect(allowed.status, allowed.text).toBe(200);
    });

    it('an actor that is not the authenticated client', async () => {
      const response = await exchange(AGENT, { token: await userToken(), type: JWT }, { actor_token: await svid(`${TD}/other-agent`), audience: MCP });
      expectRefused(response, 'invalid_request', /^policy: (no_rule_matched|actor_not_client)/);
    });

    it('a chain deeper than the cap', async () => {
      const deep = await exchange(MCP, { token: await hop1Token(), type: ACCESS_TOKEN }, { audience: DOWNSTREAM });
      expect(deep.status, deep.text).toBe(200);
      // The files API tries to act once more: three actors against a cap of two.
      const third = await exchange(DOWNSTREAM, { token: deep.body.access_token as string, type: ACCESS_TOKEN }, { audience: 'https://elsewhere.example.test' });
      expectRefused(third, 'invalid_request', 'delegation: chain_too_deep (3 > 2)');
      // The refused chain is in the audit record, current actor first.
      expect(running.audit.records.at(-1)!.actor).toMatchObject({ subject: DOWNSTREAM });
      expect(running.audit.records.at(-1)!.actorChain?.map((member) => member.sub)).toEqual([DOWNSTREAM, MCP, AGENT]);
    });

    it('delegation where the rule allows only impersonation', async () => {
      const withActor = await exchange(DOWNSTREAM, { token: await userToken(), type: JWT }, { audience: 'https://elsewhere.example.test' });
      expectRefused(withActor, 'invalid_request', 'policy: no_rule_matched');
      const impersonation = await impersonate(DOWNSTREAM, { token: await userToken(), type: JWT }, 'https://elsewhere.example.test');
      expect(impersonation.status, impersonation.text).toBe(200);
      expect(decodeJwt(impersonation.body.access_token as string).act).toBeUndefined();
    });

    it('an act claim from any issuer but this broker', async () => {
      const claimsToBeDelegated = await userToken({ act: { sub: AGENT, iss: TD, spiffe_id: AGENT } });
      const response = await impersonate(DOWNSTREAM, { token: claimsToBeDelegated, type: JWT }, 'https://elsewhere.example.test');
      expectRefused(response, 'invalid_request', 'subject: act_from_foreign_issuer');
    });

    it('impersonation of a delegated token by anyone but its current actor', async () => {
      const toFilesApi = (await exchange(MCP, { token: await hop1Token(), type: ACCESS_TOKEN }, { audience: DOWNSTREAM })).body.access_token as string;
      // The files API holds a token whose current actor is the MCP server: impersonating it would make
      // the files API's own calls look like the MCP server's.
      const response = await impersonate(DOWNSTREAM, { token: toFilesApi, type: ACCESS_TOKEN }, 'https://elsewhere.example.test');
      expectRefused(response, 'invalid_request', 'delegation: delegated_subject_needs_actor');
    });

    it('a broker token whose audience is another workload', async () => {
      // The agent's token names the MCP server: the files API cannot exchange it.
      const response = await exchange(DOWNSTREAM, { token: await hop1Token(), type: ACCESS_TOKEN }, { audience: 'https://elsewhere.example.test' });
      expectRefused(response, 'invalid_request', /^subject: /);
    });

    it('scope widening at any hop', async () => {
      // The user never held files:admin, although the rule would allow it.
      expectRefused(await exchange(AGENT, { token: await userToken(), type: JWT }, { audience: MCP, scope: 'files:admin' }), 'invalid_scope', 'policy: scope_exceeds_subject (rule agent-acts-for-users)');
      // The agent's token holds tools:read only; the MCP server cannot get tools:write back.
      const narrow = await hop1Token('tools:read');
      expectRefused(await exchange(MCP, { token: narrow, type: ACCESS_TOKEN }, { audience: DOWNSTREAM, scope: 'tools:write' }), 'invalid_scope', 'policy: scope_exceeds_subject (rule mcp-calls-files-api)');
    });

    it('audience widening', async () => {
      expectRefused(await exchange(MCP, { token: await hop1Token(), type: ACCESS_TOKEN }, { audience: 'https://evil.example.test' }), 'invalid_target', 'policy: audience_not_allowed (rule mcp-calls-files-api)');
    });

    it('lifetime widening: never beyond the subject token', async () => {
      const shortLived = await idp.mint({ sub: 'alice', aud: running.issuer, scope: 'tools:read' }, { expiresIn: 20 });
      const response = await exchange(AGENT, { token: shortLived, type: JWT }, { audience: MCP });
      expect(response.status, response.text).toBe(200);
      expect(response.body.expires_in as number).toBeLessThanOrEqual(20);
      expect(decodeJwt(response.body.access_token as string).exp!).toBeLessThanOrEqual(decodeJwt(shortLived).exp!);
    });

    it('a broker token signed by a foreign key, even with this broker as issuer', async () => {
      const foreign = await generateTestKey('ES256');
      const now = Math.floor(Date.now() / 1000);
      const forged = await new SignJWT({ iss: running.issuer, sub: 'alice', aud: MCP, client_id: AGENT, jti: 'forged', iat: now, exp: now + 300, scope: 'tools:read' })
        .setProtectedHeader({ alg: 'ES256', kid: foreign.kid, typ: 'at+jwt' })
        .sign(foreign.privateKey);
      expectRefused(await exchange(MCP, { token: forged, type: ACCESS_TOKEN }, { audience: DOWNSTREAM }), 'invalid_request', /^subject: /);
    });
  });
});

describe('issued token size cap', () => {
  let idp: LoopbackIssuer;
  let running: RunningBroker;
  const client = { id: 'svc', auth: { method: 'none' as const } };

  beforeAll(async () => {
    idp = await LoopbackIssuer.start();
    running = await startBroker(() => ({
      clients: [client],
      limits: { maxIssuedTokenBytes: 1_024 },
      plugins: [oidcPlugin({ issuer: idp.issuer, jwksUri: idp.jwksUri }), accessTokenPlugin],
      policy: { rules: [{ id: 'copies-profile', match: { issuers: [idp.issuer] }, grant: { audiences: [DOWNSTREAM], claims: { copy: ['profile'] } } }] },
    }));
  });
  afterAll(async () => {
    await running?.close();
    await idp?.close();
  });

  const exchangeWithProfile = async (profile: string) =>
    postToken(running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      client_id: 'svc',
      subject_token: await idp.mint({ sub: 'alice', aud: running.issuer, profile }),
      subject_token_type: JWT,
      audience: DOWNSTREAM,
    });

  it('refuses a token over limits.maxIssuedTokenBytes with invalid_request, and issues one under it', async () => {
    const small = await exchangeWithProfile('x'.repeat(100));
    expect(small.status, small.text).toBe(200);
    const large = await exchangeWithProfile('x'.repeat(1_200));
    expect([large.status, large.body.error], large.text).toEqual([400, 'invalid_request']);
    expect(large.body).not.toHaveProperty('access_token');
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', reason: 'issued_token_too_large (rule copies-profile)' });
  });
});
