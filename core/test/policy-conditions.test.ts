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

  it('refuses a runaway loop at load, and the watchdog stops a loop within budget at the time limit', () => {
    // Once stopped by the watchdog only after it had run 100 ms: its worst case is now known at load.
    expect(compileErrorOf('subject.claims.big.exists(a, subject.claims.big.exists(b, subject.claims.big.exists(c, c < 0)))')).toMatch(
      /^expression may cost up to \d+ steps; the limit is 100000 \(costliest part: `subject\.claims\.big\.exists\(a, /,
    );
    // Within budget (about 90k steps), and about 10 ms on the largest claims the limits allow: over a 1 ms bound.
    const condition = PolicyCondition.compile("subject.claims.groups.all(g, g.matches('^[\\\\pL\\\\pN_-]+$') && g.matches('^\\\\pL+$') && g.matches('^[\\\\pL-]+$'))");
    expect(condition.usesWatchdog).toBe(true);
    const groups = Array.from({ length: CONDITION_LIMITS.maxListLength - 1 }, () => 'é'.repeat(119));
    const started = performance.now();
    expect(condition.evaluate(input({ subject: { claims: { groups } } }), { timeoutMs: 1 })).toEqual({ ok: false, error: 'evaluation timeout: exceeded 1 ms' });
    expect(performance.now() - started).toBeLessThan(1000);
    // The interrupted condition is still usable. A generous bound here: on a loaded machine even a trivial
    // evaluation can miss a wall-clock bound, and this checks reuse, not speed.
    expect(condition.evaluate(input({ subject: { claims: { groups } } }), { timeoutMs: 5_000 })).toEqual({ ok: true, value: true });
    expect(condition.evaluate(input({ subject: { claims: { groups: ['team-a', 'x!'] } } }), { timeoutMs: 5_000 })).toEqual({ ok: true, value: false });
  });

  it('runs a backtracking pattern in linear time, and refuses exponential cel.bind growth at load', () => {
    // Ran as JS RegExp before: 18 s for 28 characters, so each evaluation ended at the 100 ms watchdog.
    const redos = PolicyCondition.compile("subject.claims.email.matches('^(a+)+$')");
    const started = performance.now();
    expect(redos.evaluate(input({ subject: { claims: { email: `${'a'.repeat(40)}!` } } }))).toEqual({ ok: true, value: false });
    expect(performance.now() - started).toBeLessThan(1000);
    expect(redos.evaluate(input({ subject: { claims: { email: 'a'.repeat(40) } } }))).toEqual({ ok: true, value: true });

    // 14 doublings is as deep as maxDepth lets cel.bind nest: the growth is in the estimate
    const doubling = `cel.bind(l0, subject.claims.big, ${Array.from({ length: 14 }, (_, i) => `cel.bind(l${i + 1}, l${i} + l${i}, `).join('')}size(l14) > 0${')'.repeat(15)}`;
    expect(compileErrorOf(doubling)).toMatch(/^expression may cost up to \d+ steps; the limit is 100000 /);
  });
});

describe('regular expressions (RE2)', () => {
  const attack = (length: number) => input({ subject: { subject: `${'a'.repeat(length)}!` } });

  it('evaluates a pathological pattern on attacker input in microseconds, without the watchdog', () => {
    const condition = PolicyCondition.compile("subject.subject.matches('^(a+)+$')");
    expect(condition.usesWatchdog).toBe(false);
    // Before: 100 ms each (the watchdog), 10 evaluations over 1 s; a 28-character input backtracks for 18 s.
    for (const length of [28, 40]) {
      expect(condition.evaluate(attack(length))).toEqual({ ok: true, value: false }); // warm-up
      const started = performance.now();
      for (let i = 0; i < 10; i++) expect(condition.evaluate(attack(length))).toEqual({ ok: true, value: false });
      expect(performance.now() - started).toBeLessThan(20);
    }
    // The longest string a condition can read: linear, under a millisecond each here.
    const longest = attack(CONDITION_LIMITS.maxStringLength - 1);
    expect(condition.evaluate(longest)).toEqual({ ok: true, value: false });
    const started = performance.now();
    for (let i = 0; i < 10; i++) expect(condition.evaluate(longest)).toEqual({ ok: true, value: false });
    expect(performance.now() - started).toBeLessThan(200);
  });

  it('is an unanchored search with RE2 syntax', () => {
    expect(evaluate("subject.subject.matches('payments:api$') && !subject.subject.matches('^payments')")).toEqual({ ok: true, value: true });
    // (?i) and \pL are RE2, not JS RegExp syntax
    expect(evaluate("subject.subject.matches('(?i)^SYSTEM:') && subject.claims.email.matches('^\\\\pL+@')")).toEqual({ ok: true, value: true });
    expect(evaluate("subject.attributes.groups.exists(g, g.matches('^payments-(admins|users)$'))")).toEqual({ ok: true, value: true });
  });

  it('compiles a literal pattern at load: syntax errors, lookaround and backreferences are compile errors', () => {
    expect(compileErrorOf("subject.subject.matches('(a')")).toBe('invalid regular expression: missing closing ): `(a` (line 1, column 25)');
    expect(compileErrorOf("subject.issuer == 'x' &&\n  subject.subject.matches('[z-a]')")).toBe('invalid regular expression: invalid character class range: `z-a` (line 2, column 27)');
    expect(compileErrorOf("subject.subject.matches('^(?=admin)')")).toMatch(/^invalid regular expression: invalid or unsupported Perl syntax: `\(\?=` /);
    expect(compileErrorOf("subject.subject.matches('(?<!a)b')")).toMatch(/^invalid regular expression: /);
    expect(compileErrorOf("subject.subject.matches('(a)\\\\1')")).toBe('invalid regular expression: invalid escape sequence: `\\1` (line 1, column 25)');
    // Type errors still name `matches` as written
    expect(compileErrorOf("request.chainDepth.matches('x')")).toBe("found no matching overload for 'int.matches(string)' (line 1, column 1)");
  });

  it('bounds a pattern computed at run time, failing closed without echoing it', () => {
    const condition = PolicyCondition.compile("'payments-admins'.matches(subject.claims.pattern)");
    expect(condition.usesWatchdog).toBe(false);
    const withPattern = (pattern: string) => condition.evaluate(input({ subject: { claims: { pattern } } }));
    expect(withPattern('^payments-')).toEqual({ ok: true, value: true });
    expect(withPattern('^ledger-')).toEqual({ ok: true, value: false });
    const at = "at `'payments-admins'.matches(subject.claims.pattern)` (line 1, column 1)";
    expect(withPattern('(secret')).toEqual({ ok: false, error: `invalid regular expression ${at}` });
    expect(withPattern('(?=secret)')).toEqual({ ok: false, error: `invalid regular expression ${at}` });
    // counted repetition is what lets a short pattern compile to a huge program
    expect(withPattern('(.{1000}){1000}')).toEqual({ ok: false, error: `regular expression too complex ${at}` });
    expect(withPattern('x'.repeat(CONDITION_LIMITS.maxPatternLength + 1))).toEqual({ ok: false, error: `regular expression too long ${at}` });
    expect(withPattern('(secret')).toEqual({ ok: false, error: `invalid regular expression ${at}` }); // cached: same answer
  });
});

describe('the cost estimate', () => {
  it('refuses a condition whose worst case is over the budget, naming the costliest part', () => {
    // Two nested loops over claims: 256 × 256 comparisons of values that may be whole JSON trees
    expect(compileErrorOf('subject.claims.groups.exists(g, subject.claims.roles.exists(r, g == r))')).toMatch(
      /^expression may cost up to \d+ steps; the limit is 100000 \(costliest part: `subject\.claims\.roles\.exists\(r, g == r\)` \(line 1, column 33\)\)$/,
    );
    // A computed pattern may be the longest the limits allow, run over the longest string
    expect(compileErrorOf('subject.subject.matches(subject.claims.pattern)')).toMatch(/^expression may cost up to \d+ steps; the limit is 100000 /);
    // V8's lastIndexOf is quadratic
    expect(compileErrorOf('subject.subject.lastIndexOf(subject.issuer) >= 0')).toMatch(/^expression may cost up to \d+ steps/);
  });

  it('accepts one loop over claims, even running a pattern on each element: the loop amortizes', () => {
    for (const source of [
      "subject.claims.groups.exists(g, g.matches('^team-[a-z]+$'))",
      "request.audiences.all(a, a in subject.claims.allowed)",
      "request.chain.all(a, request.chain.exists(b, a.sub == b.iss))",
      "subject.claims.scope.split(' ').exists(s, s == 'admin')",
      'subject.claims.org == actor.claims.org',
    ]) {
      expect(PolicyCondition.compile(source).source).toBe(source);
    }
  });

  it('keeps the watchdog only for loops and bind', () => {
    expect(PolicyCondition.compile("subject.subject.matches('^system:') && subject.claims.email.endsWith('@x')").usesWatchdog).toBe(false);
    expect(PolicyCondition.compile("duration(subject.claims.ttl) < duration('1h')").usesWatchdog).toBe(false);
    expect(PolicyCondition.compile("request.scopes.exists(s, s == 'a')").usesWatchdog).toBe(true);
    expect(PolicyCondition.compile("cel.bind(s, subject.subject, s == 'a')").usesWatchdog).toBe(true);
  });

  it('bounds duration() on input: cel-js parses it with a cubic backtracking pattern', () => {
    const condition = PolicyCondition.compile("duration(subject.claims.ttl) < duration('1h')");
    expect(condition.evaluate(input({ subject: { claims: { ttl: '30m' } } }))).toEqual({ ok: true, value: true });
    const started = performance.now();
    // 2000 digits took 4 s, with no watchdog
    expect(condition.evaluate(input({ subject: { claims: { ttl: '1'.repeat(2000) } } }))).toEqual({ ok: false, error: 'invalid duration at `duration(subject.claims.ttl)` (line 1, column 1)' });
    expect(condition.evaluate(input({ subject: { claims: { ttl: 'nonsense' } } }))).toEqual({ ok: false, error: 'invalid duration at `duration(subject.claims.ttl)` (line 1, column 1)' });
    expect(performance.now() - started).toBeLessThan(100);
  });
});

describe('input limits the estimate relies on', () => {
  const limits = CONDITION_LIMITS;

  it('fails closed on a claims or attributes list, object or string over a limit, naming no value', () => {
    const inClaims = (claims: Record<string, unknown>) => evaluate("'x' in subject.claims.groups", input({ subject: { claims: { groups: ['x'], ...claims } } }));
    expect(inClaims({ groups: Array(limits.maxListLength + 1).fill('g') })).toEqual({ ok: false, error: 'claims holds a list of more than 256 elements' });
    expect(inClaims({ other: Object.fromEntries(Array.from({ length: limits.maxListLength + 1 }, (_, i) => [`k${i}`, i])) })).toEqual({
      ok: false,
      error: 'claims holds an object with more than 256 members',
    });
    expect(inClaims({ other: { deep: `secret-${'x'.repeat(limits.maxStringLength)}` } })).toEqual({ ok: false, error: 'claims holds a string longer than 8192 characters' });
    expect(inClaims({ a: 'x'.repeat(8000), b: 'x'.repeat(8000), c: 'x'.repeat(8000), d: 'x'.repeat(8000), e: 'x'.repeat(8000) })).toEqual({
      ok: false,
      error: 'claims holds more than 32768 values and characters',
    });
    expect(inClaims({ groups: Array(limits.maxListLength).fill('x') })).toEqual({ ok: true, value: true }); // at the limit
    const attributes = evaluate("'x' in subject.attributes.groups", input({ subject: { attributes: { groups: Array(limits.maxListLength + 1).fill('x') } } }));
    expect(attributes).toEqual({ ok: false, error: 'attributes holds a list of more than 256 elements' });
  });

  it('fails closed on a field, list or chain over a limit', () => {
    expect(evaluate("subject.issuer != ''", input({ subject: { subject: 'x'.repeat(limits.maxStringLength + 1) } }))).toEqual({ ok: false, error: 'subject.subject is longer than 8192 characters' });
    expect(evaluate("'a' in request.scopes", input({ request: { scopes: Array(limits.maxListLength + 1).fill('a') } }))).toEqual({ ok: false, error: 'request.scopes holds a list of more than 256 elements' });
    expect(evaluate("'a' in request.audiences", input({ request: { audiences: Array(5).fill('a'.repeat(8000)) } }))).toEqual({ ok: false, error: 'request.audiences holds more than 32768 values and characters' });
    const link = { sub: 'spiffe://prod/a', iss: 'https://spire.example', spiffe_id: 'spiffe://prod/a' };
    expect(evaluate('request.chainDepth > 0', input({ request: { chain: Array(limits.maxChainLength + 1).fill(link), chainDepth: limits.maxChainLength + 1 } }))).toEqual({
      ok: false,
      error: 'request.chain holds more than 32 members',
    });
  });

  it('exports the limits', () => {
    expect(CONDITION_LIMITS).toMatchObject({ maxCost: 100_000, maxStringLength: 8_192, maxListLength: 256, maxCollectionSize: 32_768, maxChainLength: 32, maxPatternLength: 1_024, maxDurationLength: 32 });
  });
});
