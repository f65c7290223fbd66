import { describe, expect, it } from 'vitest';
import {
  InvalidRequest,
  InvalidScope,
  TemporarilyUnavailable,
  TOKEN_TYPE_JWT,
  TOKEN_TYPE_JWT_SVID,
  type Grant,
  type Logger,
} from '@tessera/plugin-sdk';
import { WorkloadApiError, type DelegatedIdentityClient, type DelegatedJwtSvid } from '@tessera/spiffe';
import { SpireJwtSvidIssuer, spireJwtSvidConfigSchema } from '../src/index.js';

const NOW = new Date('2030-01-01T00:00:00Z');
const logged: string[] = [];
const log: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: (_obj, msg) => void logged.push(msg ?? ''),
  error: (_obj, msg) => void logged.push(msg ?? ''),
  child: () => log,
};

/** An agent stand-in: answers FetchJWTSVIDs with what the test says. */
function issuer(answer: (request: Parameters<DelegatedIdentityClient['fetchJwtSvids']>[0]) => Promise<DelegatedJwtSvid[]>) {
  const calls: Parameters<DelegatedIdentityClient['fetchJwtSvids']>[0][] = [];
  const client = {
    fetchJwtSvids: (request: Parameters<DelegatedIdentityClient['fetchJwtSvids']>[0]) => (calls.push(request), answer(request)),
  };
  return { calls, issuer: new SpireJwtSvidIssuer(spireJwtSvidConfigSchema.parse({ adminSocket: 'unix:///x' }), client, log) };
}

const svid = (spiffeId: string, lifetime = 300): DelegatedJwtSvid => ({
  spiffeId,
  token: `token-for-${spiffeId}`,
  expiresAt: new Date(NOW.getTime() + lifetime * 1000),
  issuedAt: NOW,
});

function grant(overrides: Partial<Grant> = {}): Grant {
  return {
    grantType: 'urn:ietf:params:oauth:grant-type:token-exchange',
    client: { id: 'c', authMethod: 'none' },
    subject: { issuer: 'https://k8s', subject: 'system:serviceaccount:payments:api', audiences: [], expiresAt: NOW, tokenType: TOKEN_TYPE_JWT, claims: {}, attributes: {} },
    audiences: ['spiffe://example.org/db'],
    scopes: [],
    lifetimeSeconds: 600,
    tokenType: TOKEN_TYPE_JWT_SVID,
    ruleId: 'r',
    parameters: { selectors: ['k8s:ns:payments', 'k8s:sa:api'] },
    ...overrides,
  };
}
const context = { brokerIssuer: 'https://broker', now: NOW, signal: AbortSignal.timeout(1_000) };

describe('SpireJwtSvidIssuer', () => {
  it('asks the agent for the policy-chosen selectors and audience, and answers with the SVID', async () => {
    const { calls, issuer: spire } = issuer(async () => [svid('spiffe://example.org/ns/payments/sa/api')]);
    const issued = await spire.issue(grant(), context);
    expect(calls[0]).toMatchObject({ audience: ['spiffe://example.org/db'], selectors: [{ type: 'k8s', value: 'ns:payments' }, { type: 'k8s', value: 'sa:api' }] });
    expect(issued).toEqual({
      token: 'token-for-spiffe://example.org/ns/payments/sa/api',
      issuedTokenType: TOKEN_TYPE_JWT_SVID,
      tokenType: 'N_A',
      expiresIn: 300,
      subject: 'spiffe://example.org/ns/payments/sa/api',
    });
  });

  it('picks the entry policy names when several match, and refuses to guess otherwise', async () => {
    const two = async () => [svid('spiffe://example.org/a'), svid('spiffe://example.org/b')];
    expect((await issuer(two).issuer.issue(grant({ parameters: { selectors: 'unix:uid:1000', spiffeId: 'spiffe://example.org/b' } }), context)).subject).toBe('spiffe://example.org/b');
    const ambiguous = await issuer(two).issuer.issue(grant(), context).catch((error: unknown) => error);
    expect(ambiguous).toBeInstanceOf(InvalidRequest);
    expect((ambiguous as InvalidRequest).detail).toBe('spire: several registration entries match; set issuerParameters.spiffeId');
  });

  it('refuses what a JWT-SVID cannot honour: scopes, or a grant shorter than the SVID', async () => {
    const { issuer: spire } = issuer(async () => [svid('spiffe://example.org/a', 300)]);
    expect(await spire.issue(grant({ scopes: ['read'] }), context).catch((error: unknown) => error)).toBeInstanceOf(InvalidScope);
    const short = await spire.issue(grant({ lifetimeSeconds: 60 }), context).catch((error: unknown) => error);
    expect(short).toBeInstanceOf(InvalidRequest);
    expect((short as InvalidRequest).detail).toMatch(/lives 300s, longer than the 60s granted/);
  });

  it('refuses a rule without selectors or with a malformed one', async () => {
    const { calls, issuer: spire } = issuer(async () => []);
    for (const parameters of [{}, { selectors: ['nocolon'] }, { selectors: [':x'] }] as Grant['parameters'][]) {
      expect(await spire.issue(grant({ parameters }), context).catch((error: unknown) => error)).toBeInstanceOf(InvalidRequest);
    }
    expect(calls).toHaveLength(0);
  });

  it('maps agent answers: no entry → 400, unreachable or not a delegate → 503 with a log line naming the fix', async () => {
    const failing = (code: ConstructorParameters<typeof WorkloadApiError>[0]) => issuer(async () => Promise.reject(new WorkloadApiError(code, 'FetchJWTSVIDs'))).issuer.issue(grant(), context).catch((error: unknown) => error);
    expect(await failing('no_identity')).toBeInstanceOf(InvalidRequest);
    const down = await failing('unavailable');
    expect(down).toBeInstanceOf(TemporarilyUnavailable);
    expect((down as TemporarilyUnavailable).headers['Retry-After']).toBe('5');
    logged.length = 0;
    expect(await failing('not_authorized_delegate')).toBeInstanceOf(TemporarilyUnavailable);
    expect(logged.join()).toContain('authorized_delegates');
    // A hung agent is cut off by the issue budget (cancelled); attestation trouble comes back as internal.
    for (const code of ['cancelled', 'timeout', 'internal', 'permission_denied'] as const) expect(await failing(code), code).toBeInstanceOf(TemporarilyUnavailable);
  });

  it('takes issuerParameters.spiffeId only as one valid SPIFFE ID', async () => {
    const { issuer: spire } = issuer(async () => [svid('spiffe://example.org/a')]);
    for (const spiffeId of [['spiffe://example.org/a'], 'spiffe://example.org/../a', 'not-an-id']) {
      const refused = await spire.issue(grant({ parameters: { selectors: 'unix:uid:1', spiffeId } }), context).catch((error: unknown) => error);
      expect(refused, String(spiffeId)).toBeInstanceOf(InvalidRequest);
    }
  });
});
