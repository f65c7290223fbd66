import 'reflect-metadata';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN } from '@tessera/plugin-sdk';
import { LoopbackIssuer } from '@tessera/plugin-testkit';
import { startContractBroker, type ContractBroker } from '@tessera/plugin-testkit/contract';
import { githubActionsConfigSchema, TOKEN_TYPE_GITHUB_ACTIONS } from '../src/index.js';
import { mintWorkflowToken } from './fixtures.js';

describe('GitHub Actions tokens under policy', () => {
  let github: LoopbackIssuer;
  let running: ContractBroker;

  beforeAll(async () => {
    github = await LoopbackIssuer.start({ path: '/token', alg: 'RS256' });
    running = await startContractBroker(() => ({
      plugins: [
        { use: '@tessera/plugin-github-actions', config: { issuer: github.issuer, owners: ['Octo-Org'] } },
        { use: '@tessera/plugin-access-token' },
      ],
      rules: [
        {
          id: 'deploy-from-main',
          match: { subjectTokenTypes: [TOKEN_TYPE_GITHUB_ACTIONS], attributes: { 'github.repository': 'octo-org/deploy-*', 'github.ref': 'refs/heads/main' } },
          grant: { audiences: ['https://deploy.example.test'], scopes: ['deploy'] },
        },
        {
          id: 'release-environment',
          match: { attributes: { 'github.environment': ['production', 'staging'] } },
          grant: { audiences: ['https://release.example.test'] },
        },
      ],
    }));
  });
  afterAll(async () => {
    await running?.close();
    await github?.close();
  });

  const exchange = async (subjectToken: string, audience: string) =>
    running.post({
      grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
      subject_token: subjectToken,
      subject_token_type: TOKEN_TYPE_GITHUB_ACTIONS,
      requested_token_type: TOKEN_TYPE_ACCESS_TOKEN,
      audience,
    });

  it('allows a workflow on main of a matching repository', async () => {
    const response = await exchange(await mintWorkflowToken(github, running.issuer), 'https://deploy.example.test');
    expect(response.status, response.text).toBe(200);
    const claims = decodeJwt(response.body.access_token as string);
    expect(claims.sub).toBe('repo:octo-org/deploy-api:ref:refs/heads/main');
    expect(claims.aud).toBe('https://deploy.example.test');
  });

  it('refuses the same repository from another branch', async () => {
    const token = await mintWorkflowToken(github, running.issuer, { ref: 'refs/heads/feature', sub: 'repo:octo-org/deploy-api:ref:refs/heads/feature' });
    const response = await exchange(token, 'https://deploy.example.test');
    expect(response.status).toBe(400);
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', reason: 'policy: no_rule_matched' });
  });

  it('refuses a repository outside the pattern', async () => {
    const response = await exchange(await mintWorkflowToken(github, running.issuer, { repository: 'octo-org/website' }), 'https://deploy.example.test');
    expect(response.status).toBe(400);
  });

  it('matches on the deployment environment, and never on a claim that is absent', async () => {
    const withEnvironment = await mintWorkflowToken(github, running.issuer, { repository: 'octo-org/website', environment: 'production' });
    expect((await exchange(withEnvironment, 'https://release.example.test')).status).toBe(200);
    const withoutEnvironment = await mintWorkflowToken(github, running.issuer, { repository: 'octo-org/website' });
    expect((await exchange(withoutEnvironment, 'https://release.example.test')).status).toBe(400);
  });

  it('refuses tokens from owners not configured, whatever policy says', async () => {
    const token = await mintWorkflowToken(github, running.issuer, { repository_owner: 'someone-else', repository: 'someone-else/deploy-api' });
    const response = await exchange(token, 'https://deploy.example.test');
    expect(response.status).toBe(400);
    expect(running.audit.records.at(-1)).toMatchObject({ decision: 'deny', reason: 'subject: claims: repository_owner not allowed' });
  });

  it('pins owners by id when ownerIds is set, so a re-registered owner name is not enough', async () => {
    const pinned = await startContractBroker(() => ({
      plugins: [
        { use: '@tessera/plugin-github-actions', config: { issuer: github.issuer, owners: ['octo-org'], ownerIds: ['65'] } },
        { use: '@tessera/plugin-access-token' },
      ],
      rules: [{ id: 'any', grant: { audiences: ['https://deploy.example.test'] } }],
    }));
    try {
      const post = async (overrides: Record<string, unknown>) =>
        pinned.post({
          grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
          subject_token: await mintWorkflowToken(github, pinned.issuer, overrides),
          subject_token_type: TOKEN_TYPE_GITHUB_ACTIONS,
          audience: 'https://deploy.example.test',
        });
      expect((await post({})).status).toBe(200);
      const squatted = await post({ repository_owner_id: '9001' });
      expect(squatted.status).toBe(400);
      expect(pinned.audit.records.at(-1)).toMatchObject({ reason: 'subject: claims: repository_owner_id not allowed' });
    } finally {
      await pinned.close();
    }
  });

  it('requires an owner allow-list in config', () => {
    expect(githubActionsConfigSchema.safeParse({}).success).toBe(false);
    expect(githubActionsConfigSchema.safeParse({ owners: [] }).success).toBe(false);
  });
});
