import { describe, expect, it } from 'vitest';
import {
  CONDITION_LIMITS,
  ConditionCompileError,
  PolicyCondition,
  type ConditionIdentity,
  type ConditionInput,
} from '../src/policy/conditions.js';

const NOW = new Date('2030-01-01T00:00:00Z');
const TOKEN_TYPE_JWT = 'urn:ietf:params:oauth:token-type:jwt';

function identity(overrides: Partial<ConditionIdentity> = {}): ConditionIdentity {
  return {
    issuer: 'https://kubernetes.default.svc',
    subject: 'system:serviceaccount:payments:api',
    tokenType: TOKEN_TYPE_JWT,
    validator: 'kubernetes',
    audiences: ['https://broker.example'],
    expiresAt: new Date(NOW.getTime() + 30 * 60_000),
    attributes: { 'k8s.namespace': 'prod', groups: ['system:serviceaccounts', 'payments-admins'] },
    claims: { email: 'api@payments.example', email_verified: true, level: 3, org: { id: 'acme', tier: 'gold' } },
    ...overrides,
  };
}

const ABSENT_ACTOR: ConditionInput['actor'] = {
  issuer: '',
  subject: '',
  tokenType: '',
  validator: '',
  audiences: [],
  expiresAt: new Date(0),
  attributes: {},
  claims: {},
  present: false,
};

function input(overrides: { subject?: Partial<ConditionIdentity>; actor?: ConditionInput['actor']; request?: Partial<ConditionInput['request']> } = {}): ConditionInput {
  return {
    client: { id: 'payments-api', authMethod: 'private_key_jwt', spiffeId: '' },
    subject: identity(overrides.subject),
    actor: overrides.actor ?? ABSENT_ACTOR,
    request: {
      grantType: 'urn:ietf:params:oauth:grant-type:token-exchange',
      endpoint: 'token',
      requestedTokenType: 'urn:ietf:params:oauth:token-type:access_token',
      audiences: ['https://ledger.example'],
      scopes: ['ledger.read'],
      chain: [],
      chainDepth: 0,
      now: NOW,
      ...overrides.request,
    },
  };
}

function evaluate(source: string, given: ConditionInput = input()) {
  return PolicyCondition.compile(source).evaluate(given);
}

function compileErrorOf(source: string): string {
  try {
    PolicyCondition.compile(source);
  } catch (error) {
    expect(error).toBeInstanceOf(ConditionCompileError);
    return (error as Error).message;
  }
  throw new Error(`compiled: ${source}`);
}

describe('PolicyCondition.compile', () => {
  it.each([
    "subject.attributes['k8s.namespace'] == 'prod'",
    "'payments-admins' in subject.attributes.groups",
    "has(subject.claims.email) && subject.claims.email.endsWith('@payments.example')",
    "request.chain.all(a, a.sub.startsWith('spiffe://prod/'))",
    "subject.expiresAt - request.now < duration('1h')",
    '!actor.present || actor.validator == "spiffe"',
    "client.id == 'payments-api' && client.authMethod != 'none' && client.spiffeId == ''",
    "request.chainDepth <= 2 && size(request.chain) == request.chainDepth && 'ledger.read' in request.scopes",
    "request.audiences.exists(a, a.startsWith('https://')) && request.grantType.contains('token-exchange')",
    // dyn result: the bool check moves to evaluation
    'subject.claims.email_verified',
  ])('accepts %s', (source) => {
    expect(PolicyCondition.compile(source).source).toBe(source);
  });

  it('rejects a syntax error, saying where', () => {
    expect(compileErrorOf("subject.issuer == 'x' &&")).toMatch(/Unexpected token.*\(line 1, column 25\)/);
    expect(compileErrorOf("subject.issuer == 'x'\n  && (actor.present")).toMatch(/line 2, column \d+/);
  });

  it('rejects an unknown variable', () => {
    expect(compileErrorOf("user.name == 'x'")).toMatch(/Unknown variable: user/);
  });

  it('rejects an unknown field on a declared object', () => {
    expect(compileErrorOf("subject.subjct == 'x'")).toMatch(/No such key: subjct \(line 1, column 9\)/);
    expect(compileErrorOf('subject.present')).toMatch(/No such key: present/);
    expect(compileErrorOf("request.chain.all(a, a.spiffeId == '')")).toMatch(/No such key: spiffeId/);
    expect(compileErrorOf("client.secret == ''")).toMatch(/No such key: secret/);
  });

  it('rejects an expression that is not a bool', () => {
    expect(compileErrorOf('subject.subject')).toBe('expression must be a bool, but it is string');
    expect(compileErrorOf('request.chainDepth + 1')).toBe('expression must be a bool, but it is int');
    expect(compileErrorOf('request.scopes')).toBe('expression must be a bool, but it is list<string>');
  });

  it('rejects a type mismatch', () => {
    expect(compileErrorOf("request.chainDepth == 'x'")).toMatch(/no such overload: int == string/);
    expect(compileErrorOf("subject.expiresAt < 'tomorrow'")).toMatch(/no such overload/);
    expect(compileErrorOf('actor.present && subject.audiences')).toMatch(/no such overload|bool/);
  });

  it('rejects a source over the length limit before parsing it', () => {
    const source = `subject.issuer == '${'x'.repeat(CONDITION_LIMITS.maxSourceLength)}'`;
    expect(compileErrorOf(source)).toBe(`expression is ${source.length} characters; the limit is ${CONDITION_LIMITS.maxSourceLength}`);
  });

  it('rejects expressions over the AST size or nesting limits', () => {
    expect(compileErrorOf(`request.chainDepth${' + 1'.repeat(600)} > 0`)).toMatch(/maxAstNodes/);
    expect(compileErrorOf(`${'('.repeat(60)}actor.present${')'.repeat(60)}`)).toMatch(/maxDepth/);
  });

  it("rejects a '__proto__' key in a map literal", () => {
    expect(compileErrorOf("{'__proto__': 1}.size() == 1")).toMatch(/'__proto__' is not allowed/);
  });
});

describe('PolicyCondition.evaluate', () => {
  it('reads attributes as strings and as lists', () => {
    expect(evaluate("subject.attributes['k8s.namespace'] == 'prod'")).toEqual({ ok: true, value: true });
    expect(evaluate("subject.attributes['k8s.namespace'] == 'prod'", input({ subject: { attributes: { 'k8s.namespace': 'dev' } } }))).toEqual({ ok: true, value: false });
    expect(evaluate("'payments-admins' in subject.attributes.groups")).toEqual({ ok: true, value: true });
    expect(evaluate("subject.attributes.groups.exists(g, g.endsWith('-admins'))")).toEqual({ ok: true, value: true });
  });

  it('looks up claims, guarded by has()', () => {
    const condition = PolicyCondition.compile("has(subject.claims.org) && subject.claims.org.tier == 'gold' && subject.claims.email_verified == true");
    expect(condition.evaluate(input())).toEqual({ ok: true, value: true });
    expect(condition.evaluate(input({ subject: { claims: { email_verified: true } } }))).toEqual({ ok: true, value: false });
    // JSON numbers are CEL doubles; comparisons with int literals still work
    expect(evaluate('subject.claims.level >= 3 && subject.claims.level == 3')).toEqual({ ok: true, value: true });
  });

  it('walks the delegation chain', () => {
    const condition = PolicyCondition.compile("request.chainDepth <= 2 && request.chain.all(a, a.sub.startsWith('spiffe://prod/'))");
    const link = (sub: string) => ({ sub, iss: 'https://spire.example', spiffe_id: sub });
    const prod = input({ request: { chain: [link('spiffe://prod/ns/payments/sa/api'), link('spiffe://prod/ns/web/sa/frontend')], chainDepth: 2 } });
    expect(condition.evaluate(prod)).toEqual({ ok: true, value: true });
    const mixed = input({ request: { chain: [link('spiffe://prod/ns/payments/sa/api'), link('spiffe://dev/ns/web/sa/frontend')], chainDepth: 2 } });
    expect(condition.evaluate(mixed)).toEqual({ ok: true, value: false });
    expect(condition.evaluate(input())).toEqual({ ok: true, value: true }); // all() over an empty chain
  });

  it('compares timestamps and durations', () => {
    const condition = PolicyCondition.compile("subject.expiresAt - request.now < duration('1h')");
    expect(condition.evaluate(input())).toEqual({ ok: true, value: true });
    expect(condition.evaluate(input({ subject: { expiresAt: new Date(NOW.getTime() + 2 * 3_600_000) } }))).toEqual({ ok: true, value: false });
    expect(evaluate("request.now > timestamp('2029-12-31T23:59:59Z')")).toEqual({ ok: true, value: true });
  });

  it('tells a present actor from an absent one', () => {
    const condition = PolicyCondition.compile("!actor.present || (actor.validator == 'spiffe' && actor.subject.startsWith('spiffe://prod/'))");
    expect(condition.evaluate(input())).toEqual({ ok: true, value: true });
    const actor = { ...identity({ subject: 'spiffe://prod/ns/web/sa/frontend', validator: 'spiffe' }), present: true };
    expect(condition.evaluate(input({ actor }))).toEqual({ ok: true, value: true });
    expect(condition.evaluate(input({ actor: { ...actor, subject: 'spiffe://dev/x' } }))).toEqual({ ok: true, value: false });
  });

  it('reports a missing claim as an error, without echoing input values', () => {
    expect(evaluate("subject.claims.department == 'finance'")).toEqual({ ok: false, error: 'no such key at `department` (line 1, column 16)' });
    const result = evaluate('subject.claims[subject.subject] == 1');
    expect(result.ok).toBe(false);
    expect(JSON.stringify(result)).not.toContain('system:serviceaccount');
  });

  it('reports other runtime errors as {ok:false}', () => {
    expect(evaluate("int(subject.claims.email) == 1")).toMatchObject({ ok: false, error: expect.stringMatching(/^int conversion error/) });
    expect(evaluate('request.chainDepth * 9223372036854775807 > 0', input({ request: { chainDepth: 2 } }))).toMatchObject({ ok: false, error: expect.stringMatching(/^numeric overflow/) });
    expect(evaluate('subject.claims.email_verified', input({ subject: { claims: { email_verified: 'yes' } } }))).toEqual({ ok: false, error: 'expression did not evaluate to a bool' });
    expect(evaluate('request.chainDepth == 1', input({ request: { chainDepth: 1.5 } }))).toMatchObject({ ok: false });
    expect(evaluate('has(subject.claims.when)', input({ subject: { claims: { when: new Date() } } }))).toEqual({ ok: false, error: 'claims holds a value that is not JSON' });
  });

  it('keeps prototype keys in claims and attributes as plain data', () => {
    const claims = JSON.parse('{"__proto__": {"admin": true}, "constructor": "x", "sub": "alice"}') as Record<string, unknown>;
    const given = input({ subject: { claims, attributes: { constructor: 'y', 'k8s.namespace': 'prod' } } });
    expect(evaluate("subject.claims['__proto__'].admin == true", given)).toEqual({ ok: true, value: true });
    expect(evaluate("subject.claims.sub == 'alice' && has(subject.claims.constructor)", given)).toEqual({ ok: true, value: true });
    expect(evaluate("subject.attributes['k8s.namespace'] == 'prod' && subject.attributes.constructor == 'y'", given)).toEqual({ ok: true, value: true });
    expect(evaluate('has(subject.claims.toString) || has(subject.claims.hasOwnProperty)', given)).toEqual({ ok: true, value: false });
    expect(evaluate("has(subject.claims.admin)", given)).toEqual({ ok: true, value: false });
    expect(Object.prototype).not.toHaveProperty('admin');
  });

  it('stops a runaway evaluation at the time limit', () => {
    const big = Array.from({ length: 10_000 }, (_, i) => i);
    const given = input({ subject: { claims: { big } } });
    const condition = PolicyCondition.compile('subject.claims.big.exists(a, subject.claims.big.exists(b, subject.claims.big.exists(c, c < 0)))');
    const started = performance.now();
    const result = condition.evaluate(given);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(result).toEqual({ ok: false, error: `evaluation timeout: exceeded ${CONDITION_LIMITS.timeoutMs} ms` });
    // The interrupted condition is still usable. A generous bound here: on a loaded machine even a trivial
    // evaluation can miss a wall-clock bound, and this checks reuse, not speed.
    expect(condition.evaluate(input({ subject: { claims: { big: [1, 2, -1] } } }), { timeoutMs: 5_000 })).toEqual({ ok: true, value: true });
  });

  it('stops a backtracking regex and exponential cel.bind growth at the time limit', () => {
    const redos = PolicyCondition.compile("subject.claims.email.matches('^(a+)+$')");
    let started = performance.now();
    expect(redos.evaluate(input({ subject: { claims: { email: `${'a'.repeat(40)}!` } } }))).toMatchObject({ ok: false, error: expect.stringMatching(/timeout/) });
    expect(performance.now() - started).toBeLessThan(1000);

    // 14 doublings is as deep as maxDepth lets cel.bind nest; over a 10k list that is 160M elements
    const doubling = `cel.bind(l0, subject.claims.big, ${Array.from({ length: 14 }, (_, i) => `cel.bind(l${i + 1}, l${i} + l${i}, `).join('')}size(l14) > 0${')'.repeat(15)}`;
    const bind = PolicyCondition.compile(doubling);
    started = performance.now();
    expect(bind.evaluate(input({ subject: { claims: { big: Array(10_000).fill('s') } } }))).toMatchObject({ ok: false, error: expect.stringMatching(/timeout/) });
    expect(performance.now() - started).toBeLessThan(1000);
  });
});
