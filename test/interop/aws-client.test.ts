import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { runExchangeCommand } from '@tessera/client';
import { accessTokenPlugin, startBroker, type RunningBroker } from '../e2e/support.js';
import { MOTO_ACCOUNT, MOTO_SKIP_REASON, MotoServer, requireMotoOrSkip, type AwsCredentials } from '../../plugins/aws/test/moto.js';

// Skipped only where moto's STS server is not installed (local runs); CI requires it (TESSERA_REQUIRE_MOTO=1).
const moto = requireMotoOrSkip();
const DEPLOY = 'https://deploy.example.test';

/** The whole AWS path: the workload's SDK credentials → @tessera/client's signed proof → the broker → STS (moto). */
describe.skipIf(!moto)(`tessera exchange --from aws, against moto's STS${moto ? '' : ` (${MOTO_SKIP_REASON})`}`, () => {
  let server: MotoServer;
  let running: RunningBroker;
  let deployer: AwsCredentials;
  const saved = { ...process.env };

  beforeAll(async () => {
    server = await MotoServer.start(moto!);
    deployer = await server.assumeRole({ roleName: 'deployer', sessionName: 'build-42' });
    await server.verifySignatures();
    running = await startBroker(() => ({
      clients: [{ id: 'ci', auth: { method: 'none' } }],
      plugins: [{ use: '@tessera/plugin-aws', config: { accounts: [MOTO_ACCOUNT], globalEndpoint: false, endpoints: [{ url: server.url, region: 'us-east-1' }] } }, accessTokenPlugin],
      policy: {
        rules: [
          {
            id: 'deployers',
            match: { attributes: { 'aws.roleArn': `arn:aws:iam::${MOTO_ACCOUNT}:role/deployer` } },
            grant: { audiences: [DEPLOY], maxLifetimeSeconds: 600, allowLifetimeBeyondSubject: true },
          },
        ],
      },
    }));
    // The default provider chain reads the environment first, as on a CI runner or a container.
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: deployer.accessKeyId, AWS_SECRET_ACCESS_KEY: deployer.secretAccessKey, AWS_SESSION_TOKEN: deployer.sessionToken, AWS_REGION: 'us-east-1' });
  }, 120_000);
  afterAll(async () => {
    process.env = saved;
    await running?.close();
    await server?.close();
  }, 60_000);

  it('proves the assumed role to the broker and gets a token for it', async () => {
    let printed = '';
    const code = await runExchangeCommand(
      ['--broker', running.issuer, '--from', 'aws', '--aws-sts-endpoint', `${server.url}/`, '--client-id', 'ci', '--audience', DEPLOY],
      (text) => void (printed += text),
    );
    expect(code).toBe(0);
    expect(decodeJwt(printed.trim())).toMatchObject({ sub: `arn:aws:iam::${MOTO_ACCOUNT}:role/deployer`, aud: DEPLOY });
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'allow', subject: { issuer: 'aws-sts:aws' } });
  });
});
