import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GRANT_TYPE_TOKEN_EXCHANGE } from '@tessera/plugin-sdk';
import type { LoopbackIssuer } from '@tessera/plugin-testkit';
import { ECHO_ISSUER, leakedFragments, startContractBroker, TOKEN_TYPE_CONTRACT_ECHO, type ContractBroker } from '@tessera/plugin-testkit/contract';
import { TOKEN_TYPE_AZURE_MI, TOKEN_TYPE_STARFLY_AZURE_MI } from '../src/index.js';
import { APP_CLIENT_ID, APP_ID_URI, authorityOf, mintMiToken, SECOND_TENANT, startEntra, SUBSCRIPTION, TENANT } from './fixtures.js';

describe('Azure managed identity tokens under policy, through a real broker', () => {
  let entra: LoopbackIssuer;
  let running: ContractBroker;

  beforeAll(async () => {
    entra = await startEntra();
    running = await startContractBroker(() => ({
      plugins: [{ use: '@tessera/plugin-azure', config: { tenants: [TENANT, SECOND_TENANT], audiences: [APP_CLIENT_ID, APP_ID_URI], authority: authorityOf(entra) } }, ECHO_ISSUER],
      rules: [
        {
          id: 'payments-prod',
          match: {
            subjectTokenTypes: [TOKEN_TYPE_AZURE_MI, TOKEN_TYPE_STARFLY_AZURE_MI],
            attributes: { 'azure.tenantId': TENANT, 'azure.subscriptionId': SUBSCRIPTION, 'azure.resourceGroup': 'payments-*' },
          },
          grant: { audiences: ['https://payments.example.test'] },
        },
      ],
    }));
  });
  afterAll(async () => {
    await running?.close();
    await entra?.close();
  });

  const exchange = (subjectToken: string, subjectTokenType: string = TOKEN_TYPE_AZURE_MI) =>
    running.post({
      grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
      subject_token: subjectToken,
      subject_token_type: subjectTokenType,
      requested_token_type: TOKEN_TYPE_CONTRACT_ECHO,
      audience: 'https://payments.example.test',
    });

  it('allows an identity of the matching resource group, v1.0 or v2.0, under either token type', async () => {
    for (const type of [TOKEN_TYPE_AZURE_MI, TOKEN_TYPE_STARFLY_AZURE_MI]) {
      for (const version of ['1.0', '2.0'] as const) {
        const response = await exchange(await mintMiToken(entra, { version }), type);
        expect(response.status, response.text).toBe(200);
        expect(response.body.access_token).toBe('echo:payments-prod');
      }
    }
  });

  it('leaves other tenants and resource groups to policy, which finds no rule for them', async () => {
    for (const token of [
      await mintMiToken(entra, { tenant: SECOND_TENANT }),
      await mintMiToken(entra, {}, { xms_mirid: `/subscriptions/${SUBSCRIPTION}/resourcegroups/billing/providers/Microsoft.Compute/virtualMachines/vm-1` }),
      await mintMiToken(entra, {}, { xms_mirid: undefined }),
    ]) {
      const response = await exchange(token);
      expect(response.status).toBe(400);
      expect(response.body.access_token).toBeUndefined();
      expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', reason: 'policy: no_rule_matched' });
    }
  });

  it('refuses a token for another app before policy runs, and echoes nothing of it', async () => {
    const token = await mintMiToken(entra, { audience: running.issuer });
    const audited = running.audit.records.length;
    const response = await exchange(token);
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('invalid_request');
    expect(response.body.access_token).toBeUndefined();
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', reason: 'subject: audience: aud is not the configured app' });
    expect(leakedFragments(token, [response.text, JSON.stringify(running.audit.records.slice(audited))])).toEqual([]);
  });
});
