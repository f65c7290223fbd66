import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GRANT_TYPE_TOKEN_EXCHANGE } from '@tessera/plugin-sdk';
import { ECHO_ISSUER, startContractBroker, TOKEN_TYPE_CONTRACT_ECHO, type ContractBroker } from '@tessera/plugin-testkit/contract';
import { TOKEN_TYPE_AWS_STS, TOKEN_TYPE_STARFLY_AWS_STS } from '../src/index.js';
import { MOTO_ACCOUNT, MOTO_SKIP_REASON, MotoServer, requireMotoOrSkip, type AwsCredentials } from './moto.js';
import { decodeProof, encodeEnvelope, signProof, tamperSignature } from './proof.js';

// End to end against moto's STS with signature checking on: the real Query protocol, real SigV4
// verification, real error documents, through a broker loaded from config like an operator's.

// Skipped only where moto's STS server is not installed (local runs); CI installs it and sets
// TESSERA_REQUIRE_MOTO=1, so requireMotoOrSkip() throws there instead of skipping.
const moto = requireMotoOrSkip();
const DEPLOY = 'https://deploy.example.test';

describe.skipIf(!moto)(`AWS STS proofs against moto${moto ? '' : ` (skipped: ${MOTO_SKIP_REASON})`}`, () => {
  let server: MotoServer;
  let running: ContractBroker;
  let deployer: AwsCredentials;
  let auditor: AwsCredentials;
  let alice: AwsCredentials;

  const pluginConfig = (overrides: Record<string, unknown> = {}) => ({
    accounts: [MOTO_ACCOUNT],
    globalEndpoint: false,
    endpoints: [{ url: server.url, region: 'us-east-1' }],
    ...overrides,
  });

  beforeAll(async () => {
    server = await MotoServer.start(moto!);
    deployer = await server.assumeRole({ roleName: 'deployer', path: '/ci/', sessionName: 'build-7' });
    auditor = await server.assumeRole({ roleName: 'auditor', sessionName: 'nightly' });
    alice = await server.createUser('alice', '/eng/');
    await server.verifySignatures();
    running = await startContractBroker(() => ({
      plugins: [{ use: '@tessera/plugin-aws', config: pluginConfig() }, ECHO_ISSUER],
      rules: [
        {
          id: 'deployers-deploy',
          match: { subjectTokenTypes: [TOKEN_TYPE_AWS_STS, TOKEN_TYPE_STARFLY_AWS_STS], attributes: { 'aws.roleArn': `arn:aws:iam::${MOTO_ACCOUNT}:role/deploy*` } },
          grant: { audiences: [DEPLOY] },
        },
      ],
    }));
  });
  afterAll(async () => {
    await running?.close();
    await server?.close();
  });

  const proofFor = (credentials: AwsCredentials, audience = running.issuer) => signProof({ credentials, endpoint: server.url, audience });
  const exchange = (subjectToken: string, subjectTokenType: string = TOKEN_TYPE_AWS_STS, broker = running) =>
    broker.post({
      grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
      subject_token: subjectToken,
      subject_token_type: subjectTokenType,
      requested_token_type: TOKEN_TYPE_CONTRACT_ECHO,
      audience: DEPLOY,
    });
  /** Refused with invalid_request, nothing issued, nothing of the token echoed, and this audit reason. */
  const expectRefused = async (token: string, reason: string, broker = running) => {
    const response = await exchange(token, TOKEN_TYPE_AWS_STS, broker);
    expect(response.status, response.text).toBe(400);
    expect(response.body.error).toBe('invalid_request');
    expect(response.body.access_token).toBeUndefined();
    expect(response.text).not.toContain(token.slice(0, 24));
    expect(broker.audit.records.at(-1)).toMatchObject({ decision: 'deny', reason });
  };

  it('names an assumed role by its role ARN, without the path STS leaves out, and lets policy match it', async () => {
    const identity = await running.validatorFor(TOKEN_TYPE_AWS_STS).validate(await proofFor(deployer), {
      role: 'subject',
      tokenType: TOKEN_TYPE_AWS_STS,
      brokerIssuer: running.issuer,
      tokenEndpoint: running.tokenEndpoint,
      now: new Date(),
      signal: AbortSignal.timeout(5_000),
    });
    expect(identity.subject).toBe(`arn:aws:iam::${MOTO_ACCOUNT}:role/deployer`);
    expect(identity.attributes).toMatchObject({
      'aws.arn': `arn:aws:sts::${MOTO_ACCOUNT}:assumed-role/deployer/build-7`,
      'aws.roleName': 'deployer',
      'aws.sessionName': 'build-7',
      'aws.account': MOTO_ACCOUNT,
      'aws.partition': 'aws',
    });
    expect(identity.attributes['aws.principalId']).toMatch(/^AROA/);

    const response = await exchange(await proofFor(deployer));
    expect(response.status, response.text).toBe(200);
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'allow', ruleId: 'deployers-deploy', subject: { subject: `arn:aws:iam::${MOTO_ACCOUNT}:role/deployer` } });
  });

  it('accepts the Starfly token type alias', async () => {
    const response = await exchange(await proofFor(deployer), TOKEN_TYPE_STARFLY_AWS_STS);
    expect(response.status, response.text).toBe(200);
  });

  it('leaves roles policy does not name to policy', async () => {
    await expectRefused(await proofFor(auditor), 'policy: no_rule_matched');
  });

  it('refuses a replayed proof', async () => {
    const token = await proofFor(deployer);
    expect((await exchange(token)).status).toBe(200);
    await expectRefused(token, 'subject: claims: proof already used');
  });

  it('relies on STS for the signature: a tampered proof gets SignatureDoesNotMatch', async () => {
    await expectRefused(tamperSignature(await proofFor(deployer)), 'subject: signature: sts: SignatureDoesNotMatch');
  });

  it('binds the proof to this broker: re-pointing the audience header of another broker\'s proof breaks the signature', async () => {
    const forOther = await proofFor(deployer, 'https://other-broker.example.test');
    await expectRefused(forOther, 'subject: audience: x-tessera-audience does not name this broker');
    const repointed = decodeProof(forOther);
    repointed.headers['x-tessera-audience'] = running.issuer;
    await expectRefused(encodeEnvelope(repointed), 'subject: signature: sts: SignatureDoesNotMatch');
  });

  it('refuses wrong keys and stripped session tokens as STS does', async () => {
    await expectRefused(await proofFor({ ...deployer, secretAccessKey: 'not-the-secret' }), 'subject: signature: sts: SignatureDoesNotMatch');
    await expectRefused(await proofFor({ accessKeyId: deployer.accessKeyId, secretAccessKey: deployer.secretAccessKey }), 'subject: signature: sts: InvalidClientTokenId');
  });

  it('refuses IAM users by default', async () => {
    await expectRefused(await proofFor(alice), 'subject: claims: IAM users not accepted');
  });

  it('with IAM users allowed, names a user by full ARN and restricts roles by pattern', async () => {
    const other = await startContractBroker(() => ({
      plugins: [
        { use: '@tessera/plugin-aws', config: pluginConfig({ allowIamUsers: true, roleArns: [`arn:aws:iam::${MOTO_ACCOUNT}:role/deployer`] }) },
        ECHO_ISSUER,
      ],
    }));
    try {
      const user = await exchange(await signProof({ credentials: alice, endpoint: server.url, audience: other.issuer }), TOKEN_TYPE_AWS_STS, other);
      expect(user.status, user.text).toBe(200);
      expect(other.audit.records.at(-1)).toMatchObject({ subject: { subject: `arn:aws:iam::${MOTO_ACCOUNT}:user/eng/alice` } });
      await expectRefused(await signProof({ credentials: auditor, endpoint: server.url, audience: other.issuer }), 'subject: claims: role not allowed', other);
    } finally {
      await other.close();
    }
  });
});
