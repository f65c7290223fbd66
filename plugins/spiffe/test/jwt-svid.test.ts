import 'reflect-metadata';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidToken, TemporarilyUnavailable, TOKEN_TYPE_JWT_SVID, type SubjectValidator, type ValidationContext } from '@tessera/plugin-sdk';
import { generateTestKey } from '@tessera/plugin-testkit';
import { startContractBroker, type ContractBroker } from '@tessera/plugin-testkit/contract';
import { TestTrustDomain } from './fixtures.js';

describe('JWT-SVID rules', () => {
  let domain: TestTrustDomain;
  let partner: TestTrustDomain;
  let bundlePath: string;
  let running: ContractBroker;
  let validator: SubjectValidator;

  beforeAll(async () => {
    domain = await TestTrustDomain.create('example.org');
    partner = await TestTrustDomain.create('partner.example');
    const dir = await mkdtemp(join(tmpdir(), 'tessera-svid-'));
    bundlePath = join(dir, 'example.org.json');
    await domain.writeBundle(bundlePath);
    await partner.writeBundle(join(dir, 'partner.json'));
    running = await startContractBroker(() => ({
      plugins: [
        {
          use: '@tessera/plugin-spiffe',
          config: {
            trustDomains: [
              { name: 'example.org', bundle: { file: bundlePath } },
              { name: 'partner.example', bundle: { file: join(dir, 'partner.json') }, algorithms: ['ES256'] },
              // Trusted, but its bundle never arrives.
              { name: 'dark.example', bundle: { endpoint: 'http://127.0.0.1:9/bundle' } },
            ],
            allowedAudiences: ['https://also.example.test'],
            // The dark endpoint fails at once (nothing listens), so startup still waits for the files.
          },
        },
      ],
    }));
    validator = running.validatorFor(TOKEN_TYPE_JWT_SVID);
  });
  afterAll(() => running?.close());

  const context = (overrides: Partial<ValidationContext> = {}): ValidationContext => ({
    role: 'subject',
    tokenType: TOKEN_TYPE_JWT_SVID,
    brokerIssuer: running.issuer,
    tokenEndpoint: running.tokenEndpoint,
    now: new Date(),
    signal: AbortSignal.timeout(5_000),
    ...overrides,
  });
  const reason = (token: string, ctx = context()) =>
    validator.validate(token, ctx).then(
      () => 'accepted',
      (error: unknown) => (error instanceof InvalidToken ? error.detail : error instanceof TemporarilyUnavailable ? 'unavailable' : String(error)),
    );

  it('normalizes a JWT-SVID into SPIFFE attributes, issuer = trust domain', async () => {
    const identity = await validator.validate(await domain.mint('/ns/payments/sa/api', running.issuer), context());
    expect(identity).toMatchObject({
      issuer: 'spiffe://example.org',
      subject: 'spiffe://example.org/ns/payments/sa/api',
      attributes: { 'spiffe.id': 'spiffe://example.org/ns/payments/sa/api', 'spiffe.trustDomain': 'example.org', 'spiffe.path': '/ns/payments/sa/api' },
    });
  });

  it('verifies with the bundle of the trust domain in sub, and only that one', async () => {
    // Signed by example.org's key but claiming to be partner.example's workload.
    const crossed = await domain.mint('/x', running.issuer, { claims: { sub: 'spiffe://partner.example/x' } });
    expect(await reason(crossed)).toBe('unknown_key');
    expect(await reason(await partner.mint('/x', running.issuer))).toBe('accepted');
    expect(await reason(await domain.mint('/x', running.issuer, { claims: { sub: 'spiffe://unknown.example/x' } }))).toBe('untrusted_issuer: trust domain not trusted');
  });

  it('enforces the JWT-SVID header and claim rules', async () => {
    const mint = (options: Parameters<TestTrustDomain['mint']>[2]) => domain.mint('/w', running.issuer, options);
    expect(await reason(await mint({ header: { kid: undefined } }))).toBe('unknown_key: kid missing');
    expect(await reason(await mint({ header: { typ: 'at+jwt' } }))).toBe('malformed: typ');
    expect(await reason(await mint({ header: { typ: 'JOSE' } }))).toBe('accepted');
    expect(await reason(await mint({ header: { jku: 'https://attacker.example/keys' } }))).toBe('malformed: header member not allowed in a JWT-SVID');
    expect(await reason(await mint({ claims: { sub: 'spiffe://example.org/a/../b' } }))).toBe('claims: sub is not a SPIFFE ID');
    expect(await reason(await mint({ claims: { sub: 'SPIFFE://example.org/a' } }))).toBe('claims: sub is not a SPIFFE ID');
    expect(await reason(await mint({ claims: { sub: 'spiffe://example.org' } }))).toBe('claims: sub has no workload path');
    expect(await reason(await mint({ claims: { exp: undefined } }))).toBe('claims: claim exp');
    expect(await reason(await mint({ claims: { iat: Math.floor(Date.now() / 1000) - 100_000, exp: Math.floor(Date.now() / 1000) + 60 } }))).toBe('lifetime: exp too far after iat');
    // EdDSA is not a JWT-SVID algorithm, whatever key the attacker holds.
    const ed = await generateTestKey('EdDSA');
    expect(await reason(await mint({ key: ed }))).toBe('algorithm: alg not allowed for trust domain');
  });

  it('applies allowedAudiences to subject tokens only: never to client assertions or the SPIFFE door', async () => {
    const token = await domain.mint('/w', 'https://also.example.test');
    expect(await reason(token)).toBe('accepted');
    expect(await reason(token, context({ role: 'client' }))).toBe('audience: claim aud');
    expect(await reason(token, context({ brokerAudienceOnly: true }))).toBe('audience: claim aud');
  });

  it('answers 503 for a trusted domain whose bundle has not arrived', async () => {
    const dark = await TestTrustDomain.create('dark.example');
    expect(await reason(await dark.mint('/w', running.issuer))).toBe('unavailable');
  });

  it('picks up a rotated bundle file without a restart', async () => {
    const old = domain.keys[0]!;
    await domain.rotate();
    const fresh = await domain.mint('/w', running.issuer);
    await domain.writeBundle(bundlePath, 2);
    const deadline = Date.now() + 5_000;
    while ((await reason(fresh)) !== 'accepted' && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 25));
    expect(await reason(fresh)).toBe('accepted');
    // The old key is gone from the bundle, so its tokens no longer verify.
    expect(await reason(await domain.mint('/w', running.issuer, { key: old }))).toBe('unknown_key');
  });
});
