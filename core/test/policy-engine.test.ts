import { describe, expect, it } from 'vitest';
import {
  GRANT_TYPE_JWT_BEARER,
  GRANT_TYPE_TOKEN_EXCHANGE,
  InvalidRequest,
  InvalidScope,
  InvalidTarget,
  TOKEN_TYPE_ACCESS_TOKEN,
  TOKEN_TYPE_ID_TOKEN,
  TOKEN_TYPE_JWT,
  type VerifiedIdentity,
} from '@tessera/plugin-sdk';
import { brokerConfigSchema, type BrokerConfigInput } from '../src/config/schema.js';
import { PolicyEngine, type PolicyDecision, type PolicyRequest } from '../src/policy/policy-engine.js';

type RuleInput = NonNullable<NonNullable<BrokerConfigInput['policy']>['rules']>[number];

const NOW = new Date('2030-01-01T00:00:00Z');

function engine(...rules: RuleInput[]): PolicyEngine {
  const config = brokerConfigSchema.parse({ issuer: 'https://broker.example', policy: { rules } });
  return new PolicyEngine(config.policy.rules);
}

function identity(overrides: Partial<VerifiedIdentity> = {}): VerifiedIdentity {
  return {
    issuer: 'https://idp.example',
    subject: 'user-1',
    audiences: ['https://broker.example'],
    expiresAt: new Date(NOW.getTime() + 3_600_000),
    tokenType: TOKEN_TYPE_JWT,
    claims: {},
    attributes: {},
    ...overrides,
  };
}

function request(overrides: Partial<PolicyRequest> = {}): PolicyRequest {
  return {
    grantType: 'token_exchange',
    grantTypeUri: GRANT_TYPE_TOKEN_EXCHANGE,
    endpoint: 'token',
    client: { id: 'client-a', authMethod: 'private_key_jwt' },
    subject: identity(),
    requestedTokenType: TOKEN_TYPE_ACCESS_TOKEN,
    targets: ['https://api.example'],
    scopes: undefined,
    now: NOW,
    ...overrides,
  };
}

function allowed(decision: PolicyDecision) {
  if (!decision.allowed) throw new Error(`expected allow, got ${decision.reason}`);
  return decision;
}

function refused(decision: PolicyDecision) {
  if (decision.allowed) throw new Error(`expected refusal, got allow by ${decision.ruleId}`);
  return decision;
}

const open = { audiences: ['https://api.example'] };

describe('PolicyEngine', () => {
  it('denies by default when there are no rules', () => {
    const decision = refused(engine().decide(request()));
    expect(decision.error).toBeInstanceOf(InvalidRequest);
    expect(decision.error.code).toBe('invalid_request');
    expect(decision.reason).toBe('no_rule_matched');
    expect(decision.ruleId).toBeUndefined();
  });

  it('denies when no rule matches', () => {
    const decision = refused(engine({ id: 'other', match: { clients: ['client-b'] }, grant: open }).decide(request()));
    expect(decision.error.code).toBe('invalid_request');
    expect(decision.reason).toBe('no_rule_matched');
  });

  it('lets the first matching rule decide, in config order', () => {
    const policy = engine(
      { id: 'narrow', match: { clients: ['client-b'] }, grant: { audiences: ['https://b.example'] } },
      { id: 'first', match: { clients: ['client-*'] }, grant: { audiences: ['https://api.example'], maxLifetimeSeconds: 60 } },
      { id: 'second', match: { clients: ['client-a'] }, grant: { audiences: ['https://api.example'], maxLifetimeSeconds: 120 } },
    );
    const decision = allowed(policy.decide(request()));
    expect(decision.ruleId).toBe('first');
    expect(decision.grant.ruleId).toBe('first');
    expect(decision.grant.lifetimeSeconds).toBe(60);
  });

  it('does not fall through to a later rule when the first match refuses', () => {
    const policy = engine(
      { id: 'strict', match: {}, grant: { audiences: ['https://other.example'] } },
      { id: 'lenient', match: {}, grant: { audiences: ['**'] } },
    );
    const decision = refused(policy.decide(request()));
    expect(decision.ruleId).toBe('strict');
    expect(decision.reason).toBe('audience_not_allowed');
  });

  it('builds the grant from the request and the rule', () => {
    const actor = identity({ subject: 'actor-1' });
    const decision = allowed(
      engine({ id: 'r', grant: { audiences: ['https://*.example'], scopes: ['read', 'write'] } }).decide(
        request({ actor, targets: ['https://api.example', 'https://api.example'], scopes: ['read', 'read'] }),
      ),
    );
    expect(decision.grant).toEqual({
      grantType: GRANT_TYPE_TOKEN_EXCHANGE,
      client: { id: 'client-a', authMethod: 'private_key_jwt' },
      subject: identity(),
      actor,
      audiences: ['https://api.example'],
      scopes: ['read'],
      lifetimeSeconds: 600,
      tokenType: TOKEN_TYPE_ACCESS_TOKEN,
      ruleId: 'r',
      parameters: {},
    });
  });

  describe('audiences', () => {
    it('refuses a requested audience the rule does not allow with invalid_target', () => {
      const decision = refused(engine({ id: 'r', grant: open }).decide(request({ targets: ['https://api.example', 'https://evil.example'] })));
      expect(decision.error).toBeInstanceOf(InvalidTarget);
      expect(decision.error.code).toBe('invalid_target');
      expect(decision.reason).toBe('audience_not_allowed');
      expect(decision.ruleId).toBe('r');
      expect(decision.error.detail).toContain('rule r');
    });

    it('refuses a request without audience when the rule has no defaults', () => {
      const decision = refused(engine({ id: 'r', grant: open }).decide(request({ targets: [] })));
      expect(decision.error.code).toBe('invalid_target');
      expect(decision.reason).toBe('audience_missing');
    });

    it('uses defaultAudiences when none is requested', () => {
      const decision = allowed(
        engine({ id: 'r', grant: { audiences: ['https://*.example'], defaultAudiences: ['https://default.example'] } }).decide(
          request({ targets: [] }),
        ),
      );
      expect(decision.grant.audiences).toEqual(['https://default.example']);
    });

    it('refuses at startup a rule whose defaults it would itself refuse', () => {
      expect(() => engine({ id: 'r', grant: { audiences: ['https://api.example'], defaultAudiences: ['https://default.example'] } })).toThrow(
          'policy.rules[0].grant.defaultAudiences: "https://default.example" is not in audiences (rule r)',
      );
      expect(() => engine({ id: 'r', grant: { ...open, scopes: ['read'], defaultScopes: ['write'] } })).toThrow(
          'policy.rules[0].grant.defaultScopes: "write" is not in scopes (rule r)',
      );
    });

    it('does not add defaultAudiences to a request that names its own', () => {
      const decision = allowed(
        engine({ id: 'r', grant: { audiences: ['https://*.example'], defaultAudiences: ['https://default.example'] } }).decide(request()),
      );
      expect(decision.grant.audiences).toEqual(['https://api.example']);
    });

    it('refuses any audience when the rule allows none', () => {
      const decision = refused(engine({ id: 'r' }).decide(request()));
      expect(decision.reason).toBe('audience_not_allowed');
    });
  });

  describe('scopes', () => {
    it('refuses a scope the rule does not allow with invalid_scope', () => {
      const decision = refused(engine({ id: 'r', grant: { ...open, scopes: ['read'] } }).decide(request({ scopes: ['read', 'admin'] })));
      expect(decision.error).toBeInstanceOf(InvalidScope);
      expect(decision.error.code).toBe('invalid_scope');
      expect(decision.reason).toBe('scope_not_allowed');
    });

    it('uses defaultScopes when the request has no scope parameter', () => {
      const decision = allowed(engine({ id: 'r', grant: { ...open, scopes: ['read', 'write'], defaultScopes: ['read'] } }).decide(request()));
      expect(decision.grant.scopes).toEqual(['read']);
    });

    it('issues no scope for an explicitly empty scope list', () => {
      const decision = allowed(engine({ id: 'r', grant: { ...open, scopes: ['read'], defaultScopes: ['read'] } }).decide(request({ scopes: [] })));
      expect(decision.grant.scopes).toEqual([]);
    });
  });

  describe('lifetime', () => {
    it('is the rule maximum when the subject lives longer', () => {
      const decision = allowed(engine({ id: 'r', grant: { ...open, maxLifetimeSeconds: 300 } }).decide(request()));
      expect(decision.grant.lifetimeSeconds).toBe(300);
    });

    it('is capped by the remaining subject lifetime', () => {
      const subject = identity({ expiresAt: new Date(NOW.getTime() + 90_500) });
      const decision = allowed(engine({ id: 'r', grant: { ...open, maxLifetimeSeconds: 300 } }).decide(request({ subject })));
      expect(decision.grant.lifetimeSeconds).toBe(90);
    });

    it('may outlive the subject when allowLifetimeBeyondSubject is set', () => {
      const subject = identity({ expiresAt: new Date(NOW.getTime() + 30_000) });
      const decision = allowed(
        engine({ id: 'r', grant: { ...open, maxLifetimeSeconds: 300, allowLifetimeBeyondSubject: true } }).decide(request({ subject })),
      );
      expect(decision.grant.lifetimeSeconds).toBe(300);
    });

    it.each([
      ['already expired', -1_000],
      ['expiring right now', 0],
      ['with under a second left', 999],
    ])('refuses a subject %s', (_label, remainingMs) => {
      const subject = identity({ expiresAt: new Date(NOW.getTime() + remainingMs) });
      const decision = refused(engine({ id: 'r', grant: open }).decide(request({ subject })));
      expect(decision.error.code).toBe('invalid_request');
      expect(decision.reason).toBe('subject_expiring');
      expect(decision.ruleId).toBe('r');
    });
  });

  describe('match dimensions', () => {
    const cases: readonly {
      readonly name: string;
      readonly match: NonNullable<RuleInput['match']>;
      readonly fits: Partial<PolicyRequest>;
      readonly misses: Partial<PolicyRequest>;
    }[] = [
      {
        name: 'clients',
        match: { clients: ['ci-*'] },
        fits: { client: { id: 'ci-build', authMethod: 'none' } },
        misses: { client: { id: 'web', authMethod: 'none' } },
      },
      {
        name: 'grantTypes',
        match: { grantTypes: ['jwt_bearer'] },
        fits: { grantType: 'jwt_bearer', grantTypeUri: GRANT_TYPE_JWT_BEARER },
        misses: { grantType: 'token_exchange' },
      },
      {
        name: 'subjectTokenTypes',
        match: { subjectTokenTypes: [TOKEN_TYPE_ID_TOKEN] },
        fits: { subject: identity({ tokenType: TOKEN_TYPE_ID_TOKEN }) },
        misses: { subject: identity({ tokenType: TOKEN_TYPE_JWT }) },
      },
      {
        name: 'issuers',
        match: { issuers: ['https://token.actions.githubusercontent.com'] },
        fits: { subject: identity({ issuer: 'https://token.actions.githubusercontent.com' }) },
        misses: { subject: identity({ issuer: 'https://token.actions.githubusercontent.com.evil' }) },
      },
      {
        name: 'subjects',
        match: { subjects: ['repo:acme/*:ref:refs/heads/main'] },
        fits: { subject: identity({ subject: 'repo:acme/api:ref:refs/heads/main' }) },
        misses: { subject: identity({ subject: 'repo:acme/api:ref:refs/heads/dev' }) },
      },
      {
        name: 'requestedTokenTypes',
        match: { requestedTokenTypes: [TOKEN_TYPE_JWT] },
        fits: { requestedTokenType: TOKEN_TYPE_JWT },
        misses: { requestedTokenType: TOKEN_TYPE_ACCESS_TOKEN },
      },
    ];

    it.each(cases)('$name filters', ({ match, fits, misses }) => {
      const policy = engine({ id: 'r', match, grant: open });
      expect(allowed(policy.decide(request(fits))).ruleId).toBe('r');
      const decision = refused(policy.decide(request(misses)));
      expect(decision.reason).toBe('no_rule_matched');
      expect(decision.error.code).toBe('invalid_request');
    });

    it('requires every listed dimension to fit', () => {
      const policy = engine({ id: 'r', match: { clients: ['client-a'], issuers: ['https://idp.example'], subjects: ['admin'] }, grant: open });
      expect(refused(policy.decide(request())).reason).toBe('no_rule_matched');
      expect(allowed(policy.decide(request({ subject: identity({ subject: 'admin' }) }))).ruleId).toBe('r');
    });

    it('an empty match list matches nothing', () => {
      const policy = engine({ id: 'r', match: { clients: [] }, grant: open });
      expect(refused(policy.decide(request())).reason).toBe('no_rule_matched');
    });
  });
});

describe('match.attributes', () => {
  const rules = engine(
    {
      id: 'deploy',
      match: { attributes: { 'github.repository': 'octo-org/deploy-*', 'github.ref': ['refs/heads/main', 'refs/tags/v*'] } },
      grant: { audiences: ['https://api.example'] },
    },
    { id: 'groups', match: { attributes: { groups: 'admins' } }, grant: { audiences: ['https://api.example'] } },
  );
  const withAttributes = (attributes: VerifiedIdentity['attributes']) => request({ subject: identity({ attributes }) });

  it('requires every listed attribute to match one of its patterns', () => {
    expect(allowed(rules.decide(withAttributes({ 'github.repository': 'octo-org/deploy-api', 'github.ref': 'refs/heads/main' }))).ruleId).toBe('deploy');
    expect(allowed(rules.decide(withAttributes({ 'github.repository': 'octo-org/deploy-api', 'github.ref': 'refs/tags/v1.2' }))).ruleId).toBe('deploy');
    expect(refused(rules.decide(withAttributes({ 'github.repository': 'octo-org/deploy-api', 'github.ref': 'refs/heads/dev' }))).reason).toBe('no_rule_matched');
    // `*` stays within a segment: a nested path is not the same repository family.
    expect(refused(rules.decide(withAttributes({ 'github.repository': 'octo-org/deploy-x/y', 'github.ref': 'refs/heads/main' }))).reason).toBe('no_rule_matched');
  });

  it('never matches an absent attribute, and matches a list-valued one by any value', () => {
    expect(refused(rules.decide(withAttributes({ 'github.repository': 'octo-org/deploy-api' }))).reason).toBe('no_rule_matched');
    expect(allowed(rules.decide(withAttributes({ groups: ['users', 'admins'] }))).ruleId).toBe('groups');
    expect(refused(rules.decide(withAttributes({ groups: [] }))).reason).toBe('no_rule_matched');
  });

  it('does not read inherited properties as attributes', () => {
    const inherited = Object.create({ groups: 'admins' }) as VerifiedIdentity['attributes'];
    expect(refused(rules.decide(withAttributes(inherited))).reason).toBe('no_rule_matched');
  });
});

describe('grant.issuerParameters', () => {
  const k8s = identity({ subject: 'system:serviceaccount:payments:api', attributes: { 'k8s.namespace': 'payments', 'k8s.serviceAccount': 'api', groups: ['a', 'b'] } });

  it('fills templates from verified values and hands them to the issuer', () => {
    const rules = engine({
      id: 'to-spiffe',
      grant: {
        audiences: ['https://api.example'],
        issuerParameters: { selectors: ['k8s:ns:{attributes.k8s.namespace}', 'k8s:sa:{attributes.k8s.serviceAccount}'], note: '{{literal}} {client}' },
      },
    });
    expect(allowed(rules.decide(request({ subject: k8s }))).grant.parameters).toEqual({
      selectors: ['k8s:ns:payments', 'k8s:sa:api'],
      note: '{literal} client-a',
    });
  });

  it('refuses when a template names a value the identity lacks, is list-valued, or is unsafe', () => {
    for (const template of ['{attributes.missing}', '{attributes.groups}']) {
      const rules = engine({ id: 'r', grant: { audiences: ['https://api.example'], issuerParameters: { selectors: [template] } } });
      expect(refused(rules.decide(request({ subject: k8s }))).reason).toBe('parameter_unresolved');
    }
    const rules = engine({ id: 'r', grant: { audiences: ['https://api.example'], issuerParameters: { id: 'spiffe://td/{subject}' } } });
    // Separators and dot segments are never spliced into a parameter: no path or selector injection.
    for (const subject of ['a b', 'bob/admin', '..', 'ns:payments', 'a,b', 'x{y}']) {
      expect(refused(rules.decide(request({ subject: identity({ subject }) }))).reason, subject).toBe('parameter_unresolved');
    }
    expect(allowed(rules.decide(request({ subject: identity({ subject: 'user-1' }) }))).grant.parameters).toEqual({ id: 'spiffe://td/user-1' });
  });

  it('rejects unknown placeholders and stray braces at startup', () => {
    expect(() => engine({ id: 'r', grant: { issuerParameters: { a: '{nope}' } } })).toThrow(/unknown placeholder \{nope\}/);
    expect(() => engine({ id: 'r', grant: { issuerParameters: { a: ['ok', 'x}'] } } })).toThrow(/unbalanced brace/);
    expect(() => engine({ id: 'r', grant: { issuerParameters: { a: '{subject.x}' } } })).toThrow(/unknown placeholder/);
  });
});

describe('match.endpoints', () => {
  it('lets a rule apply to some front doors only', () => {
    const rules = engine({ id: 'spiffe-door-only', match: { endpoints: ['spiffe-exchange'] }, grant: { audiences: ['https://api.example'] } });
    expect(allowed(rules.decide(request({ endpoint: 'spiffe-exchange' }))).ruleId).toBe('spiffe-door-only');
    expect(refused(rules.decide(request({ endpoint: 'token' }))).reason).toBe('no_rule_matched');
  });
});
