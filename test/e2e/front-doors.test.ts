import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { accessTokenPlugin, ACCESS_TOKEN, API, ID_TOKEN, LoopbackIssuer, postToken, startBroker, TOKEN_EXCHANGE, type RunningBroker } from './support.js';

const PUBLIC_CLIENT = { id: 'public-agent', auth: { method: 'none' } };

async function postJson(url: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text, body: (text.startsWith('{') ? JSON.parse(text) : {}) as Record<string, unknown> };
}

describe('front doors', () => {
  let idp: LoopbackIssuer;
  let running: RunningBroker;
  let jsonOnly: RunningBroker;

  beforeAll(async () => {
    idp = await LoopbackIssuer.start();
    const common = () => ({
      clients: [PUBLIC_CLIENT],
      plugins: [{ use: '@tessera/plugin-oidc', config: { issuers: [{ issuer: idp.issuer, attributes: { email: 'email' } }] } }, accessTokenPlugin, { use: './fixtures/team-directory.mjs', config: { teams: { 'ada@example.test': 'platform' } } }],
      policy: {
        rules: [
          { id: 'platform-team', match: { attributes: { team: 'platform', email: 'ada@example.test' } }, grant: { audiences: ['https://platform.example.test'] } },
          { id: 'idp-to-api', match: { issuers: [idp.issuer] }, grant: { audiences: [API], scopes: ['read'] } },
        ],
      },
    });
    running = await startBroker((issuer) => ({ ...common(), endpoints: { jsonExchange: { enabled: true } } }), { baseDir: import.meta.dirname });
    jsonOnly = await startBroker((issuer) => ({ ...common(), endpoints: { token: { enabled: false }, jsonExchange: { enabled: true, path: '/exchange' }, metrics: { enabled: false } } }), {
      baseDir: import.meta.dirname,
    });
  });
  afterAll(async () => {
    await running?.close();
    await jsonOnly?.close();
    await idp?.close();
  });

  const subjectToken = (broker: RunningBroker, claims: Record<string, unknown> = {}) => idp.mint({ sub: 'grace', aud: broker.issuer, email: 'grace@example.test', ...claims });

  it('answers the RFC 8693 parameters as a JSON body exactly as the token endpoint does', async () => {
    const response = await postJson(`${running.issuer}/v1/exchange/token`, {
      client_id: PUBLIC_CLIENT.id,
      subject_token: await subjectToken(running),
      subject_token_type: ID_TOKEN,
      audience: [API],
      scope: 'read',
    });
    expect(response.status, response.text).toBe(200);
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(response.body).toMatchObject({ issued_token_type: ACCESS_TOKEN, token_type: 'Bearer', scope: 'read' });
    expect(decodeJwt(response.body.access_token as string)).toMatchObject({ sub: 'grace', aud: API });
    expect(running.audit.records.at(-1)).toMatchObject({ endpoint: 'json-exchange', decision: 'allow', grantType: TOKEN_EXCHANGE, ruleId: 'idp-to-api' });
  });

  it('refuses malformed JSON requests with OAuth errors, audited', async () => {
    const url = `${running.issuer}/v1/exchange/token`;
    const token = await subjectToken(running);
    const cases: [unknown, number, string][] = [
      ['{not json', 400, 'invalid_request'],
      [[1, 2], 400, 'invalid_request'],
      [{ client_id: PUBLIC_CLIENT.id, subject_token: token, subject_token_type: ID_TOKEN, audience: { a: 1 } }, 400, 'invalid_request'],
      [{ client_id: PUBLIC_CLIENT.id, subject_token: [token, token], subject_token_type: ID_TOKEN }, 400, 'invalid_request'],
      [{ client_id: PUBLIC_CLIENT.id, grant_type: 'client_credentials' }, 400, 'unsupported_grant_type'],
      [{ client_id: PUBLIC_CLIENT.id, subject_token: 'garbage', subject_token_type: ID_TOKEN, audience: API }, 400, 'invalid_request'],
      // Repeated members: JSON.parse would keep the last one silently.
      [`{"client_id":"${PUBLIC_CLIENT.id}","subject_token":"${token}","subject_token_type":"${ID_TOKEN}","audience":"${API}","subject_token":"x"}`, 400, 'invalid_request'],
      [`{"client_id":"${PUBLIC_CLIENT.id}","client\\u005fid":"other"}`, 400, 'invalid_request'],
    ];
    for (const [body, status, error] of cases) {
      const before = running.audit.records.length;
      const response = await postJson(url, body);
      expect([response.status, response.body.error], JSON.stringify(body).slice(0, 80)).toEqual([status, error]);
      expect(running.audit.records.slice(before)).toEqual([expect.objectContaining({ endpoint: 'json-exchange', decision: 'deny', error })]);
    }
    const form = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=b' });
    expect(form.status).toBe(415);
    expect((await fetch(url)).status).toBe(405);
  });

  it('runs attribute extractors after validation; they add attributes but cannot replace them', async () => {
    const allowed = await postToken(running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      client_id: PUBLIC_CLIENT.id,
      subject_token: await subjectToken(running, { sub: 'ada', email: 'ada@example.test' }),
      subject_token_type: ID_TOKEN,
      audience: 'https://platform.example.test',
    });
    expect(allowed.status, allowed.text).toBe(200);
    expect(running.audit.records.at(-1)).toMatchObject({ ruleId: 'platform-team' });

    const failing = await postToken(running.tokenEndpoint, {
      grant_type: TOKEN_EXCHANGE,
      client_id: PUBLIC_CLIENT.id,
      subject_token: await subjectToken(running, { email: 'broken@example.test' }),
      subject_token_type: ID_TOKEN,
      audience: API,
    });
    // A failing extractor fails closed like a validator fault: refused, never a 5xx.
    expect([failing.status, failing.body.error]).toEqual([400, 'invalid_request']);
    expect(running.audit.records.at(-1)).toMatchObject({ reason: 'subject: attribute extractor plugin fault' });
  });

  it('serves only the doors that are enabled', async () => {
    const token = await subjectToken(jsonOnly);
    expect((await postToken(jsonOnly.tokenEndpoint, { grant_type: TOKEN_EXCHANGE, client_id: PUBLIC_CLIENT.id })).status).toBe(404);
    expect((await fetch(`${jsonOnly.issuer}/.well-known/oauth-authorization-server`)).status).toBe(404);
    expect((await fetch(`${jsonOnly.issuer}/metrics`)).status).toBe(404);
    expect((await fetch(`${jsonOnly.issuer}/keys`)).status).toBe(200);
    const response = await postJson(`${jsonOnly.issuer}/exchange`, { client_id: PUBLIC_CLIENT.id, subject_token: token, subject_token_type: ID_TOKEN, audience: API });
    expect(response.status, response.text).toBe(200);
    expect((await postJson(`${running.issuer}/exchange`, {})).status).toBe(404);
  });

  it('counts requests per front door and outcome in Prometheus metrics, with no identities in labels', async () => {
    const body = { client_id: PUBLIC_CLIENT.id, subject_token: await subjectToken(running), subject_token_type: ID_TOKEN, audience: API };
    expect((await postJson(`${running.issuer}/v1/exchange/token`, body)).status).toBe(200);
    expect((await postJson(`${running.issuer}/v1/exchange/token`, '{not json')).status).toBe(400);
    const form = { grant_type: TOKEN_EXCHANGE, ...body };
    expect((await postToken(running.tokenEndpoint, form)).status).toBe(200);
    const response = await fetch(`${running.issuer}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/plain');
    const text = await response.text();
    expect(text).toMatch(/tessera_token_requests_total\{endpoint="json-exchange",grant_type="token_exchange",outcome="issued"\} [1-9]/);
    expect(text).toMatch(/tessera_token_requests_total\{endpoint="json-exchange",grant_type="none",outcome="invalid_request"\} [1-9]/);
    expect(text).toMatch(/tessera_token_request_duration_seconds_count\{endpoint="token",outcome="issued"\} [1-9]/);
    expect(text).not.toContain('grace');
    expect(text).not.toContain(PUBLIC_CLIENT.id);
  });
});
