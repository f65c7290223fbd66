import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GRANT_TYPE_TOKEN_EXCHANGE } from '@tessera/plugin-sdk';
import { LoopbackIssuer } from '@tessera/plugin-testkit';
import { ECHO_ISSUER, leakedFragments, startContractBroker, TOKEN_TYPE_CONTRACT_ECHO, type ContractBroker } from '@tessera/plugin-testkit/contract';
import { TOKEN_TYPE_GCP_ID_TOKEN, TOKEN_TYPE_STARFLY_GCP_WIF } from '../src/index.js';
import { gceClaims, mintGoogleToken } from './fixtures.js';

describe('GCP tokens under policy, through a real broker', () => {
  let google: LoopbackIssuer;
  let running: ContractBroker;

  beforeAll(async () => {
    google = await LoopbackIssuer.start({ alg: 'RS256' });
    running = await startContractBroker(() => ({
      plugins: [
        {
          use: '@tessera/plugin-gcp',
          config: { issuers: [google.issuer, 'accounts.google.com'], jwksUri: google.jwksUri, serviceAccounts: ['*@web-prod.iam.gserviceaccount.com', '*@web-staging.iam.gserviceaccount.com'] },
        },
        ECHO_ISSUER,
      ],
      rules: [
        {
          id: 'web-prod-vms',
          match: { subjectTokenTypes: [TOKEN_TYPE_GCP_ID_TOKEN, TOKEN_TYPE_STARFLY_GCP_WIF], attributes: { 'gcp.projectId': 'web-prod', 'gcp.zone': 'europe-west1-*' } },
          grant: { audiences: ['https://deploy.example.test'] },
        },
      ],
    }));
  });
  afterAll(async () => {
    await running?.close();
    await google?.close();
  });

  const exchange = (subjectToken: string, subjectTokenType: string = TOKEN_TYPE_GCP_ID_TOKEN) =>
    running.post({
      grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
      subject_token: subjectToken,
      subject_token_type: subjectTokenType,
      requested_token_type: TOKEN_TYPE_CONTRACT_ECHO,
      audience: 'https://deploy.example.test',
    });

  it('allows a VM of the matching project and zone, under either token type', async () => {
    for (const type of [TOKEN_TYPE_GCP_ID_TOKEN, TOKEN_TYPE_STARFLY_GCP_WIF]) {
      const response = await exchange(await mintGoogleToken(google, running.issuer), type);
      expect(response.status, response.text).toBe(200);
      expect(response.body.access_token).toBe('echo:web-prod-vms');
    }
  });

  it('leaves a VM of another project to policy, which finds no rule for it', async () => {
    const gce = (gceClaims().google as { compute_engine: Record<string, unknown> }).compute_engine;
    const token = await mintGoogleToken(google, running.issuer, { email: 'deployer@web-staging.iam.gserviceaccount.com', google: { compute_engine: { ...gce, project_id: 'web-staging' } } });
    const response = await exchange(token);
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('invalid_request');
    expect(response.body.access_token).toBeUndefined();
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', reason: 'policy: no_rule_matched' });
  });

  it('refuses an unverified email before policy runs, and echoes nothing of the token', async () => {
    const token = await mintGoogleToken(google, running.issuer, { email_verified: false });
    const audited = running.audit.records.length;
    const response = await exchange(token);
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('invalid_request');
    expect(response.body.access_token).toBeUndefined();
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', reason: 'subject: claims: email_verified is not true' });
    expect(leakedFragments(token, [response.text, JSON.stringify(running.audit.records.slice(audited))])).toEqual([]);
  });
});
