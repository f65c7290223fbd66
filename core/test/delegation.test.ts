import { describe, expect, it } from 'vitest';
import { InvalidRequest, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT, TOKEN_TYPE_JWT_SVID, type AuthenticatedClient, type VerifiedIdentity } from '@tessera/plugin-sdk';
import { planDelegation, readPriorChain, toActClaim, type DelegationInput } from '../src/policy/delegation.js';

const BROKER = 'https://broker.example';
const NOW = new Date('2030-01-01T00:00:00Z');

function identity(overrides: Partial<VerifiedIdentity> = {}): VerifiedIdentity {
  return {
    issuer: 'https://idp.example',
    subject: 'alice',
    audiences: [BROKER],
    expiresAt: new Date(NOW.getTime() + 3_600_000),
    tokenType: TOKEN_TYPE_JWT,
    claims: {},
    attributes: {},
    ...overrides,
  };
}

const agent = identity({ issuer: 'spiffe://prod.example', subject: 'spiffe://prod.example/agent', tokenType: TOKEN_TYPE_JWT_SVID });
const agentClient: AuthenticatedClient = { id: 'spiffe://prod.example/agent', authMethod: 'spiffe_jwt', identity: agent };
/** A token this broker issued (verified by the access-token plugin): only such a subject may bring a chain. */
const brokerToken = (claims: Record<string, unknown>) => ({
  subject: identity({ issuer: BROKER, tokenType: TOKEN_TYPE_ACCESS_TOKEN, claims }),
  subjectTrust: 'broker' as const,
});

function plan(overrides: Partial<DelegationInput>) {
  return planDelegation({ client: agentClient, subject: identity(), brokerIssuer: BROKER, maxChainDepth: 5, ...overrides });
}

function refusal(run: () => unknown): string | undefined {
  try {
    run();
  } catch (error) {
    if (error instanceof InvalidRequest) return error.detail;
    throw error;
  }
  return undefined;
}

describe('delegation chain', () => {
  it('names a workload actor with sub, iss and SPIFFE ID', () => {
    const { act, members } = plan({ actor: agent, actorTrust: 'workload' });
    expect(act).toEqual({ sub: 'spiffe://prod.example/agent', iss: 'spiffe://prod.example', spiffe_id: 'spiffe://prod.example/agent' });
    expect(members).toHaveLength(1);
  });

  it('nests the chain the subject token already carries inside the new actor', () => {
    const subject = brokerToken({ act: { sub: 'spiffe://prod.example/agent', iss: 'spiffe://prod.example', exp: 1, act: { sub: 'gateway' } } });
    const mcp = identity({ issuer: 'spiffe://prod.example', subject: 'spiffe://prod.example/mcp' });
    const { act } = plan({ ...subject, actor: mcp, actorTrust: 'workload', client: { id: mcp.subject, authMethod: 'spiffe_jwt', identity: mcp } });
    // Members other than sub, iss and spiffe_id carry no meaning in act (RFC 8693 §4.1) and are dropped.
    expect(act).toEqual({
      sub: 'spiffe://prod.example/mcp',
      iss: 'spiffe://prod.example',
      spiffe_id: 'spiffe://prod.example/mcp',
      act: { sub: 'spiffe://prod.example/agent', iss: 'spiffe://prod.example', act: { sub: 'gateway' } },
    });
  });

  it('lets only the current actor impersonate a delegated token, keeping its chain', () => {
    const subject = brokerToken({ act: { sub: agent.subject, iss: agent.issuer } });
    // The agent narrowing its own delegated token: history is never dropped.
    expect(plan(subject).act).toEqual({ sub: agent.subject, iss: agent.issuer });
    // Anyone else would appear as if the agent were acting.
    const other = { id: 'spiffe://prod.example/other', authMethod: 'spiffe_jwt' as const, identity: { ...agent, subject: 'spiffe://prod.example/other' } };
    expect(refusal(() => plan({ ...subject, client: other }))).toBe('delegation: delegated_subject_needs_actor');
  });

  it('takes a chain only from tokens this broker issued', () => {
    expect(refusal(() => plan({ subject: identity({ claims: { act: { sub: agent.subject } } }) }))).toBe('subject: act_from_foreign_issuer');
    // Trusted kind, but another issuer: not ours either.
    expect(refusal(() => plan({ subject: identity({ claims: { act: { sub: agent.subject } } }), subjectTrust: 'broker' }))).toBe('subject: act_from_foreign_issuer');
    expect(refusal(() => plan({ ...brokerToken({ act: { sub: agent.subject } }), subjectTrust: 'workload' }))).toBe('subject: act_from_foreign_issuer');
  });

  it('refuses malformed chains rather than repairing them', () => {
    for (const act of ['gateway', { iss: 'x' }, { sub: '' }, { sub: 7 }, [{ sub: 'a' }], { sub: 'a', act: 'b' }, { sub: 'a', iss: 3 }, { sub: 'x'.repeat(1025) }]) {
      expect(refusal(() => plan(brokerToken({ act }))), JSON.stringify(act).slice(0, 40)).toBe('subject: act claim malformed');
    }
  });

  it('caps the depth, counting the new actor', () => {
    const nested = (depth: number): unknown => {
      let act: Record<string, unknown> | undefined;
      for (let level = 1; level <= depth; level += 1) act = { sub: `a${level}`, ...(act ? { act } : {}) };
      return act;
    };
    expect(readPriorChain(identity({ claims: { act: nested(5) } }), 5)).toHaveLength(5);
    expect(plan({ ...brokerToken({ act: nested(4) }), actor: agent, actorTrust: 'workload' }).members).toHaveLength(5);
    expect(refusal(() => plan({ ...brokerToken({ act: nested(5) }), actor: agent, actorTrust: 'workload' }))).toMatch(/chain_too_deep/);
    // Reading stops at the cap: a hostile 10 000-deep chain costs no more than a 6-deep one.
    expect(refusal(() => plan(brokerToken({ act: nested(10_000) })))).toMatch(/chain_too_deep/);
  });

  it('toActClaim nests current actor outermost', () => {
    expect(toActClaim([{ sub: 'c' }, { sub: 'b' }, { sub: 'a' }])).toEqual({ sub: 'c', act: { sub: 'b', act: { sub: 'a' } } });
    expect(toActClaim([])).toBeUndefined();
  });
});

describe('actor trust', () => {
  it('refuses actors from validators that declare no actor trust (external JWTs)', () => {
    expect(refusal(() => plan({ actor: identity({ subject: 'spiffe://prod.example/agent' }) }))).toBe('actor: actor_not_trusted');
  });

  it('requires a workload actor to be a SPIFFE ID of the trust domain that issued it', () => {
    expect(refusal(() => plan({ actor: { ...agent, issuer: 'spiffe://other.example' }, actorTrust: 'workload' }))).toBe('actor: actor_not_trusted');
    expect(refusal(() => plan({ actor: { ...agent, issuer: 'https://idp.example' }, actorTrust: 'workload' }))).toBe('actor: actor_not_trusted');
    expect(refusal(() => plan({ actor: { ...agent, subject: 'spiffe://prod.example' }, actorTrust: 'workload' }))).toBe('actor: actor_not_trusted');
  });

  it("requires a broker actor to be this broker's token, issued to and presented by the client it names", () => {
    const own = identity({ issuer: BROKER, subject: 'svc', tokenType: TOKEN_TYPE_ACCESS_TOKEN, claims: { client_id: 'svc' } });
    const svc = { id: 'svc', authMethod: 'private_key_jwt' as const };
    expect(plan({ actor: own, actorTrust: 'broker', client: svc }).act).toEqual({ sub: 'svc', iss: BROKER });
    expect(refusal(() => plan({ actor: { ...own, issuer: 'https://other-broker.example' }, actorTrust: 'broker', client: svc }))).toBe('actor: actor_not_trusted');
    // A user's token held by the client, or the client's token held by someone else, proves no actor.
    expect(refusal(() => plan({ actor: { ...own, subject: 'alice' }, actorTrust: 'broker', client: svc }))).toBe('actor: actor_not_own_token');
    expect(refusal(() => plan({ actor: own, actorTrust: 'broker', client: { id: 'other', authMethod: 'private_key_jwt' } }))).toBe('actor: actor_not_own_token');
  });

  it('refuses an actor token that itself carries a chain', () => {
    expect(refusal(() => plan({ actor: { ...agent, claims: { act: { sub: 'x' } } }, actorTrust: 'workload' }))).toBe('actor: actor_is_delegated');
  });
});

describe('may_act (RFC 8693 §4.4)', () => {
  const subject = (mayAct: unknown) => identity({ claims: { may_act: mayAct } });

  it('lets the named actor act, and refuses any other', () => {
    expect(plan({ subject: subject({ sub: agent.subject }), actor: agent, actorTrust: 'workload' }).members).toHaveLength(1);
    expect(plan({ subject: subject({ sub: agent.subject, iss: agent.issuer }), actor: agent, actorTrust: 'workload' }).members).toHaveLength(1);
    expect(refusal(() => plan({ subject: subject({ sub: 'spiffe://prod.example/other' }), actor: agent, actorTrust: 'workload' }))).toBe('delegation: may_act_mismatch');
    expect(refusal(() => plan({ subject: subject({ sub: agent.subject, iss: 'spiffe://other.example' }), actor: agent, actorTrust: 'workload' }))).toBe('delegation: may_act_mismatch');
  });

  it('on impersonation, compares the client that presents the token', () => {
    expect(plan({ subject: subject({ sub: agent.subject }) }).members).toHaveLength(0);
    expect(refusal(() => plan({ subject: subject({ sub: agent.subject }), client: { id: 'other', authMethod: 'private_key_jwt' } }))).toBe('delegation: may_act_mismatch');
    expect(plan({ subject: subject({ sub: 'backend' }), client: { id: 'backend', authMethod: 'private_key_jwt' } }).members).toHaveLength(0);
    // A client without a proven identity has no issuer to compare with a stated one.
    expect(refusal(() => plan({ subject: subject({ sub: 'backend', iss: BROKER }), client: { id: 'backend', authMethod: 'private_key_jwt' } }))).toBe('delegation: may_act_mismatch');
  });

  it('refuses a malformed may_act, or one stating members it cannot compare, instead of ignoring it', () => {
    for (const mayAct of ['agent', null, [], { iss: 'x' }, { sub: 1 }]) {
      expect(refusal(() => plan({ subject: subject(mayAct), actor: agent, actorTrust: 'workload' }))).toBe('delegation: may_act_malformed');
    }
    expect(refusal(() => plan({ subject: subject({ sub: agent.subject, client_id: 'x' }), actor: agent, actorTrust: 'workload' }))).toBe('delegation: may_act_unsupported');
  });
});
