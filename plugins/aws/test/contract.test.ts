import { describe, it } from 'vitest';
import { describeValidatorContract } from '@tessera/plugin-testkit/contract';
import { TOKEN_TYPE_AWS_STS } from '../src/index.js';
import { MOTO_SKIP_REASON, MotoServer, requireMotoOrSkip } from './moto.js';
import { signProof, tamperSignature } from './proof.js';
import { TcpRelay } from './tcp-relay.js';

const MAX_AGE_SECONDS = 300;
const moto = requireMotoOrSkip();

// Skipped only where moto's STS server is not installed (local runs); CI installs it and sets
// TESSERA_REQUIRE_MOTO=1, so requireMotoOrSkip() throws instead and this branch never runs there.
if (!moto) {
  describe('validator contract: @tessera/plugin-aws', () => {
    it.skip(MOTO_SKIP_REASON, () => {});
  });
} else {
  describeValidatorContract('@tessera/plugin-aws', async () => {
    const server = await MotoServer.start(moto);
    // The plugin talks to moto through a relay the kit can stall.
    const sts = await TcpRelay.start(server.url);
    const trusted = await server.assumeRole({ roleName: 'deployer', path: '/ci/', sessionName: 'contract' });
    const stranger = await server.assumeRole({ account: '111122223333', roleName: 'deployer', sessionName: 'contract' });
    await server.verifySignatures();

    // A proof has no exp: it expires maxAgeSeconds after it was signed. So "expires in N s" = signed
    // (maxAge - N) s ago, and never in the future.
    const signingDate = (expiresIn = 300) => new Date(Date.now() - Math.max(0, MAX_AGE_SECONDS - expiresIn) * 1000);
    return {
      tokenType: TOKEN_TYPE_AWS_STS,
      plugin: () => ({
        use: '@tessera/plugin-aws',
        config: {
          accounts: ['123456789012'],
          globalEndpoint: false,
          endpoints: [{ url: sts.url, region: 'us-east-1' }],
          maxAgeSeconds: MAX_AGE_SECONDS,
          // The kit presents its valid token twice (to the validator, then to the broker).
          singleUse: false,
        },
      }),
      mint: ({ audience, expiresIn }) => signProof({ credentials: trusted, endpoint: sts.url, audience, signingDate: signingDate(expiresIn) }),
      mintUntrusted: ({ audience, expiresIn }) => signProof({ credentials: stranger, endpoint: sts.url, audience, signingDate: signingDate(expiresIn) }),
      // The signature is inside the proof, not a JWS: moto (checking signatures) answers SignatureDoesNotMatch.
      tamper: tamperSignature,
      stallUpstream: () => sts.stall(),
      close: async () => {
        await sts.close();
        await server.close();
      },
    };
  });
}
