import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TOKEN_TYPE_JWT_SVID } from '@tessera/plugin-sdk';
import { startLoopbackServer, sendJson } from '@tessera/plugin-testkit';
import { describeValidatorContract } from '@tessera/plugin-testkit/contract';
import { TestTrustDomain } from './fixtures.js';

describeValidatorContract('@tessera/plugin-spiffe (bundle file)', async () => {
  const trusted = await TestTrustDomain.create('example.org');
  const stranger = await TestTrustDomain.create('stranger.example');
  const path = join(await mkdtemp(join(tmpdir(), 'tessera-spiffe-')), 'example.org.json');
  await trusted.writeBundle(path);
  return {
    tokenType: TOKEN_TYPE_JWT_SVID,
    plugin: () => ({ use: '@tessera/plugin-spiffe', config: { trustDomains: [{ name: 'example.org', bundle: { file: path } }] } }),
    mint: ({ audience, expiresIn }) => trusted.mint('/ns/payments/sa/api', audience, { expiresIn }),
    mintUntrusted: ({ audience, expiresIn }) => stranger.mint('/ns/payments/sa/api', audience, { expiresIn }),
    trustedPublicJwk: trusted.keys[0]!.publicJwk,
  };
});

describeValidatorContract('@tessera/plugin-spiffe (bundle endpoint)', async () => {
  const trusted = await TestTrustDomain.create('example.org', 'RS256');
  const stranger = await TestTrustDomain.create('example.org', 'RS256');
  let held: (() => void)[] | undefined;
  const endpoint = await startLoopbackServer((_request, response) => {
    if (held) return void held.push(() => sendJson(response, 503, {}));
    sendJson(response, 200, trusted.bundle());
  });
  return {
    tokenType: TOKEN_TYPE_JWT_SVID,
    plugin: () => ({ use: '@tessera/plugin-spiffe', config: { trustDomains: [{ name: 'example.org', bundle: { endpoint: `${endpoint.url}/bundle` } }], startupWaitMs: 200 } }),
    mint: ({ audience, expiresIn }) => trusted.mint('/workload', audience, { expiresIn }),
    // Same trust domain, a key its bundle does not hold.
    mintUntrusted: ({ audience, expiresIn }) => stranger.mint('/workload', audience, { expiresIn }),
    stallUpstream: () => {
      held = [];
      return () => {
        const pending = held ?? [];
        held = undefined;
        pending.forEach((answer) => answer());
      };
    },
    close: () => endpoint.close(),
  };
});
