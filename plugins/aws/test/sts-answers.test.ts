import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { InMemoryReplayStore } from '@tessera/core';
import { InvalidToken, OAuthError, TemporarilyUnavailable, type TokenRejection, type ValidationContext } from '@tessera/plugin-sdk';
import { AwsStsValidator, awsConfigSchema, TOKEN_TYPE_AWS_STS } from '../src/index.js';
import { callerIdentity, FakeSts, sendXml, stsError } from './fake-sts.js';
import { decodeProof, signProof } from './proof.js';

const BROKER = 'https://broker.example.test';
const credentials = { accessKeyId: 'ASIAEXAMPLEEXAMPLE12', secretAccessKey: 'secret', sessionToken: 'session-token' };

let sts: FakeSts;
let elsewhere: FakeSts;
beforeAll(async () => {
  sts = await FakeSts.start();
  elsewhere = await FakeSts.start();
});
afterAll(async () => {
  await sts?.close();
  await elsewhere?.close();
});
beforeEach(() => {
  sts.received.length = 0;
  sts.respond((_request, response) => callerIdentity(response, 'arn:aws:sts::123456789012:assumed-role/deployer/job-1', '123456789012', 'AROAEXAMPLEID:job-1'));
});

const validatorFor = (config: Record<string, unknown> = {}) =>
  new AwsStsValidator(
    awsConfigSchema.parse({ accounts: ['123456789012'], globalEndpoint: false, endpoints: [{ url: sts.url, region: 'us-east-1' }], ...config }),
    { replay: new InMemoryReplayStore({ now: () => new Date() }) },
  );
const context = (overrides: Partial<ValidationContext> = {}): ValidationContext => ({
  role: 'subject',
  tokenType: TOKEN_TYPE_AWS_STS,
  brokerIssuer: BROKER,
  tokenEndpoint: `${BROKER}/token`,
  now: new Date(),
  signal: AbortSignal.timeout(5_000),
  ...overrides,
});
const proof = (overrides: Parameters<typeof signProof>[0] extends infer O ? Partial<O> : never = {}) =>
  signProof({ credentials, endpoint: sts.url, audience: BROKER, ...overrides });
const answer = (arn: string, account = '123456789012', userId = 'AIDAEXAMPLEID') => sts.respond((_request, response) => callerIdentity(response, arn, account, userId));

async function refusal(validator: AwsStsValidator, token: string, ctx = context()): Promise<unknown> {
  return validator.validate(token, ctx).then(
    () => undefined,
    (error: unknown) => error,
  );
}
async function expectInvalid(promise: Promise<unknown>, reason: TokenRejection, detail?: RegExp): Promise<void> {
  const error = await promise;
  expect(error).toBeInstanceOf(InvalidToken);
  expect((error as InvalidToken).reason).toBe(reason);
  if (detail) expect((error as InvalidToken).detail).toMatch(detail);
}
async function expectUnavailable(promise: Promise<unknown>, detail: RegExp): Promise<void> {
  const error = await promise;
  expect(error).toBeInstanceOf(TemporarilyUnavailable);
  expect((error as TemporarilyUnavailable).status).toBe(503);
  expect((error as TemporarilyUnavailable).headers['Retry-After']).toBeDefined();
  expect((error as TemporarilyUnavailable).detail).toMatch(detail);
}

describe('forwarding', () => {
  it('sends STS exactly the signed request: same body, same signed headers, the signed Host, nothing of its own', async () => {
    const token = await proof();
    await validatorFor().validate(token, context());
    expect(sts.received).toHaveLength(1);
    const [received] = sts.received;
    const envelope = decodeProof(token);
    expect(received!.method).toBe('POST');
    expect(received!.path).toBe('/');
    expect(received!.body).toBe(envelope.body);
    const sent = new Map(received!.headers);
    for (const [name, value] of Object.entries(envelope.headers)) expect(sent.get(name), name).toBe(value);
    expect(received!.headers.filter(([name]) => name.startsWith('x-amz-')).map(([name]) => name).sort()).toEqual(
      Object.keys(envelope.headers).filter((name) => name.startsWith('x-amz-')).sort(),
    );
    expect(received!.headers.filter(([name]) => name === 'host')).toHaveLength(1);
  });

  it('never sends a refused proof anywhere', async () => {
    const validator = validatorFor();
    await expectInvalid(refusal(validator, await proof({ endpoint: elsewhere.url })), 'untrusted_issuer');
    await expectInvalid(refusal(validator, await proof({ audience: 'https://other.example.test' })), 'audience');
    await expectInvalid(refusal(validator, await proof({ body: 'Action=AssumeRole&Version=2011-06-15' })), 'malformed');
    await expectInvalid(refusal(validator, await proof({ signingDate: new Date(Date.now() - 3_600_000) })), 'expired');
    expect(sts.received).toHaveLength(0);
    expect(elsewhere.received).toHaveLength(0);
  });

  it('does not follow redirects', async () => {
    sts.respond((_request, response) => sendXml(response, 307, '', { location: `${elsewhere.url}/` }));
    await expectUnavailable(refusal(validatorFor(), await proof()), /HTTP 307/);
    expect(elsewhere.received).toHaveLength(0);
  });
});

describe('what STS answers', () => {
  it('turns an assumed role into its role ARN, with the session as an attribute', async () => {
    answer('arn:aws:sts::123456789012:assumed-role/deployer/job-1', '123456789012', 'AROAEXAMPLEID:job-1');
    const signedAt = new Date(Date.now() - 10_000);
    const identity = await validatorFor().validate(await proof({ signingDate: signedAt }), context());
    expect(identity).toMatchObject({
      issuer: 'aws-sts:aws',
      subject: 'arn:aws:iam::123456789012:role/deployer',
      audiences: [BROKER],
      tokenType: TOKEN_TYPE_AWS_STS,
      claims: { account: '123456789012', arn: 'arn:aws:sts::123456789012:assumed-role/deployer/job-1', userId: 'AROAEXAMPLEID:job-1' },
    });
    expect(identity.attributes).toEqual({
      'aws.partition': 'aws',
      'aws.account': '123456789012',
      'aws.arn': 'arn:aws:sts::123456789012:assumed-role/deployer/job-1',
      'aws.userId': 'AROAEXAMPLEID:job-1',
      'aws.principalId': 'AROAEXAMPLEID',
      'aws.principalType': 'assumed-role',
      'aws.region': 'us-east-1',
      'aws.roleArn': 'arn:aws:iam::123456789012:role/deployer',
      'aws.roleName': 'deployer',
      'aws.sessionName': 'job-1',
    });
    expect(identity.expiresAt.getTime()).toBe(Math.floor(signedAt.getTime() / 1000) * 1000 + 300_000);
  });

  it('keeps account ids as strings, leading zeros included', async () => {
    answer('arn:aws:sts::012345678901:assumed-role/deployer/job-1', '012345678901', 'AROAEXAMPLEID:job-1');
    const identity = await validatorFor({ accounts: ['012345678901'] }).validate(await proof(), context());
    expect(identity.attributes['aws.account']).toBe('012345678901');
  });

  it('refuses accounts not configured, whatever the role', async () => {
    answer('arn:aws:sts::999999999999:assumed-role/deployer/job-1', '999999999999');
    await expectInvalid(refusal(validatorFor(), await proof()), 'untrusted_issuer', /account not allowed/);
  });

  it('matches roles against path-free role ARN patterns', async () => {
    const validator = validatorFor({ roleArns: ['arn:aws:iam::123456789012:role/deploy-*', 'arn:aws:iam::*:role/ci'] });
    answer('arn:aws:sts::123456789012:assumed-role/deploy-web/job-1');
    expect((await validator.validate(await proof(), context())).subject).toBe('arn:aws:iam::123456789012:role/deploy-web');
    answer('arn:aws:sts::123456789012:assumed-role/ci/job-1');
    expect((await validator.validate(await proof(), context())).subject).toBe('arn:aws:iam::123456789012:role/ci');
    answer('arn:aws:sts::123456789012:assumed-role/admin/deploy-web');
    await expectInvalid(refusal(validator, await proof()), 'claims', /role not allowed/);
  });

  it('refuses IAM users unless allowed, and then names them by full ARN, path included', async () => {
    answer('arn:aws:iam::123456789012:user/eng/alice', '123456789012', 'AIDAALICE');
    await expectInvalid(refusal(validatorFor(), await proof()), 'claims', /IAM users not accepted/);
    const identity = await validatorFor({ allowIamUsers: true }).validate(await proof(), context());
    expect(identity.subject).toBe('arn:aws:iam::123456789012:user/eng/alice');
    expect(identity.attributes).toMatchObject({ 'aws.principalType': 'user', 'aws.userName': 'alice', 'aws.principalId': 'AIDAALICE' });
    expect(identity.attributes['aws.roleArn']).toBeUndefined();
  });

  it('never accepts the account root, federated users or ARNs it cannot read', async () => {
    const validator = validatorFor({ allowIamUsers: true });
    for (const [arn, detail] of [
      ['arn:aws:iam::123456789012:root', /principal type root/],
      ['arn:aws:sts::123456789012:federated-user/bob', /principal type federated-user/],
      ['arn:aws:sts::123456789012:assumed-role/deployer', /not understood/],
      ['arn:aws:sts::123456789012:assumed-role/a/b/c', /not understood/],
      ['not-an-arn', /not understood/],
    ] as const) {
      answer(arn);
      await expectInvalid(refusal(validator, await proof()), 'claims', detail);
    }
  });

  it('refuses answers whose ARN disagrees with the account or the endpoint partition', async () => {
    answer('arn:aws:sts::123456789012:assumed-role/deployer/job-1', '210987654321');
    await expectInvalid(refusal(validatorFor(), await proof()), 'claims', /disagree/);
    answer('arn:aws-cn:sts::123456789012:assumed-role/deployer/job-1');
    await expectInvalid(refusal(validatorFor(), await proof()), 'claims', /partition/);
    const china = validatorFor({ endpoints: [{ url: sts.url, region: 'us-east-1', partition: 'aws-cn' }] });
    expect((await china.validate(await proof(), context())).issuer).toBe('aws-sts:aws-cn');
  });
});

describe('STS refusals and outages', () => {
  it('maps STS refusing the proof to InvalidToken, naming only the STS error code', async () => {
    for (const [status, code, reason] of [
      [403, 'SignatureDoesNotMatch', 'signature'],
      [403, 'InvalidClientTokenId', 'signature'],
      [400, 'IncompleteSignature', 'signature'],
      [403, 'ExpiredToken', 'expired'],
      [400, 'RequestExpired', 'expired'],
      [403, 'AccessDenied', 'signature'],
    ] as const) {
      sts.respond((_request, response) => stsError(response, status, code, 'The request signature we calculated does not match'));
      const error = await refusal(validatorFor(), await proof());
      expect(error).toBeInstanceOf(InvalidToken);
      expect((error as InvalidToken).reason).toBe(reason);
      expect((error as InvalidToken).detail).toBe(`${reason}: sts: ${code}`);
    }
    sts.respond((_request, response) => sendXml(response, 403, 'no xml here'));
    await expectInvalid(refusal(validatorFor(), await proof()), 'signature', /sts: HTTP 403/);
  });

  it('treats throttling and server errors as outages: 503 with Retry-After', async () => {
    sts.respond((_request, response) => stsError(response, 400, 'Throttling', 'Rate exceeded'));
    await expectUnavailable(refusal(validatorFor(), await proof()), /Throttling/);
    for (const status of [429, 500, 502, 503]) {
      sts.respond((_request, response) => sendXml(response, status, '<html>down</html>'));
      await expectUnavailable(refusal(validatorFor(), await proof()), new RegExp(`HTTP ${status}`));
    }
  });

  it('treats an unreachable STS as an outage', async () => {
    const gone = await FakeSts.start();
    const url = gone.url;
    await gone.close();
    const validator = new AwsStsValidator(awsConfigSchema.parse({ accounts: ['123456789012'], globalEndpoint: false, endpoints: [{ url, region: 'us-east-1' }] }), {
      replay: new InMemoryReplayStore({ now: () => new Date() }),
    });
    await expectUnavailable(refusal(validator, await signProof({ credentials, endpoint: url, audience: BROKER })), /unreachable/);
  });

  it('gives up on a hung STS at its own timeout or the validation budget, whichever is first', async () => {
    sts.respond(() => {});
    let started = Date.now();
    await expectUnavailable(refusal(validatorFor({ timeoutMs: 300 }), await proof()), /timeout/);
    expect(Date.now() - started).toBeLessThan(2_000);
    started = Date.now();
    await expectUnavailable(refusal(validatorFor(), await proof(), context({ signal: AbortSignal.timeout(300) })), /budget/);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('reads at most 16 KiB of an answer, declared or streamed', async () => {
    sts.respond((_request, response) => sendXml(response, 200, `<GetCallerIdentityResponse>${'x'.repeat(20_000)}</GetCallerIdentityResponse>`));
    await expectUnavailable(refusal(validatorFor(), await proof()), /too large/);
    sts.respond((_request, response) => {
      response.writeHead(200, { 'content-type': 'text/xml' });
      for (let chunk = 0; chunk < 40; chunk++) response.write('x'.repeat(1_000));
      response.end();
    });
    await expectUnavailable(refusal(validatorFor(), await proof()), /too large/);
  });

  it('treats a 200 that is not a GetCallerIdentity answer as an upstream fault, never as an identity', async () => {
    for (const body of [
      '{"GetCallerIdentityResponse":{"GetCallerIdentityResult":{"Account":"123456789012"}}}',
      '<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>arn:aws:sts::123456789012:assumed-role/deployer/job-1</Arn></GetCallerIdentityResult></GetCallerIdentityResponse>',
      '<!DOCTYPE x [<!ENTITY a "arn:aws:sts::123456789012:assumed-role/deployer/job-1">]><GetCallerIdentityResponse><GetCallerIdentityResult><Arn>&a;</Arn><UserId>u</UserId><Account>123456789012</Account></GetCallerIdentityResult></GetCallerIdentityResponse>',
      '<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>a</Arn><Arn>b</Arn><UserId>u</UserId><Account>123456789012</Account></GetCallerIdentityResult></GetCallerIdentityResponse>',
      '',
    ]) {
      sts.respond((_request, response) => sendXml(response, 200, body));
      await expectUnavailable(refusal(validatorFor(), await proof()), /malformed GetCallerIdentity response/);
    }
  });
});

describe('single use', () => {
  it('accepts a proof once, then refuses it', async () => {
    const validator = validatorFor();
    const token = await proof();
    await validator.validate(token, context());
    await expectInvalid(refusal(validator, token), 'claims', /already used/);
    // A fresh signature is a fresh proof.
    await validator.validate(await proof(), context());
  });

  it('does not burn a proof STS could not vouch for', async () => {
    const validator = validatorFor();
    const token = await proof();
    sts.respond((_request, response) => sendXml(response, 503, ''));
    await expectUnavailable(refusal(validator, token), /HTTP 503/);
    answer('arn:aws:sts::123456789012:assumed-role/deployer/job-1');
    expect((await validator.validate(token, context())).subject).toBe('arn:aws:iam::123456789012:role/deployer');
  });

  it('can be switched off', async () => {
    const validator = validatorFor({ singleUse: false });
    const token = await proof();
    await validator.validate(token, context());
    await validator.validate(token, context());
  });
});

describe('audiences', () => {
  it('accepts configured extra audiences, except where the broker demands its own', async () => {
    const validator = validatorFor({ allowedAudiences: ['spiffe://example.test/broker'], singleUse: false });
    const token = await proof({ audience: 'spiffe://example.test/broker' });
    expect((await validator.validate(token, context())).audiences).toEqual(['spiffe://example.test/broker']);
    await expectInvalid(refusal(validator, token, context({ brokerAudienceOnly: true })), 'audience');
  });
});

describe('errors', () => {
  it('are all OAuthErrors with fixed descriptions', async () => {
    const error = await refusal(validatorFor(), 'x');
    expect(error).toBeInstanceOf(OAuthError);
    expect((error as OAuthError).description).toBe('token is invalid');
  });
});
