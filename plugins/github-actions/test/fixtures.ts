import type { JWTPayload } from 'jose';
import type { LoopbackIssuer } from '@tessera/plugin-testkit';

/** Claims shaped like a real GitHub Actions token for a push to main of octo-org/deploy-api. */
export function workflowClaims(overrides: JWTPayload = {}): JWTPayload {
  return {
    sub: 'repo:octo-org/deploy-api:ref:refs/heads/main',
    repository: 'octo-org/deploy-api',
    repository_id: '74',
    repository_owner: 'octo-org',
    repository_owner_id: '65',
    repository_visibility: 'private',
    ref: 'refs/heads/main',
    ref_type: 'branch',
    sha: 'e8a9bcb42b2f2a6b2f8e8c2c1a2f5b7ad5e4c3b1',
    workflow: 'deploy',
    workflow_ref: 'octo-org/deploy-api/.github/workflows/deploy.yml@refs/heads/main',
    job_workflow_ref: 'octo-org/deploy-api/.github/workflows/deploy.yml@refs/heads/main',
    run_id: '5120',
    run_attempt: '1',
    actor: 'octocat',
    event_name: 'push',
    runner_environment: 'github-hosted',
    ...overrides,
  };
}

export function mintWorkflowToken(github: LoopbackIssuer, audience: string, overrides: JWTPayload = {}, expiresIn = 300): Promise<string> {
  return github.mint({ aud: audience, ...workflowClaims(overrides) }, { expiresIn });
}
