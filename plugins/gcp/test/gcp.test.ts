import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { InvalidToken, type SubjectValidator, type TokenRejection } from '@tessera/plugin-sdk';
import type { JWTPayload } from 'jose';
import { LoopbackIssuer, type MintOptions } from '@tessera/plugin-testkit';
import { compileEmailPattern } from '../src/email-pattern.js';
import { GCP_ATTRIBUTES, gcpConfigSchema, GOOGLE_ISSUERS, GOOGLE_JWKS_URI, TOKEN_TYPE_GCP_ID_TOKEN, TOKEN_TYPE_STARFLY_GCP_WIF } from '../src/index.js';
import { BROKER, context, gceClaims, gcpValidator, mintGoogleToken, SERVICE_ACCOUNT, SERVICE_ACCOUNT_ID } from './fixtures.js';

async function refusal(validator: SubjectValidator, token: string, reason: TokenRejection, detail?: string): Promise<void> {
  const error = await validator.validate(token, context()).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error, 'the token must be refused').toBeInstanceOf(InvalidToken);
  expect((error as InvalidToken).reason).toBe(reason);
  if (detail) expect((error as InvalidToken).detail).toBe(`${reason}: ${detail}`);
}

describe('@tessera/plugin-gcp', () => {
  let google: LoopbackIssuer;
  let impostor: LoopbackIssuer;
  beforeAll(async () => {
    google = await LoopbackIssuer.start({ alg: 'RS256' });
    impostor = await LoopbackIssuer.start({ alg: 'RS256' });
  });
  afterAll(async () => {
    await google?.close();
    await impostor?.close();
  });

  // Google's own two issuer spellings, verified with the loopback key set in place of Google's JWKS.
  const googleIssuers = () => ({ issuers: [...GOOGLE_ISSUERS], jwksUri: google.jwksUri });
  const googleToken = (audience: string, overrides: JWTPayload = {}, options: MintOptions = {}) =>
    mintGoogleToken(google, audience, { iss: 'https://accounts.google.com', ...overrides }, options);

  describe('issuers', () => {
    it('accepts both spellings of Google’s issuer as one identity whose subject is the numeric sub', async () => {
      const validator = await gcpValidator({ ...googleIssuers(), projects: ['web-prod'] });
      for (const iss of GOOGLE_ISSUERS) {
        const identity = await validator.validate(await googleToken(BROKER, { iss }), context());
        expect(identity).toMatchObject({ issuer: 'https://accounts.google.com', subject: SERVICE_ACCOUNT_ID, audiences: [BROKER], tokenType: TOKEN_TYPE_GCP_ID_TOKEN });
        expect(identity.claims.iss).toBe(iss);
      }
    });

    it('compares issuers exactly: no trailing slash, scheme or case variants', async () => {
      const validator = await gcpValidator({ ...googleIssuers(), projects: ['web-prod'] });
      for (const iss of ['https://accounts.google.com/', 'http://accounts.google.com', 'HTTPS://accounts.google.com', 'Accounts.Google.com', 'https://accounts.google.com.evil.test']) {
        await refusal(validator, await googleToken(BROKER, { iss }), 'untrusted_issuer');
      }
    });

    it('takes keys only from the configured JWKS: a token in Google’s name signed by another key fails', async () => {
      const validator = await gcpValidator({ ...googleIssuers(), projects: ['web-prod'] });
      const forged = await mintGoogleToken(impostor, BROKER, { iss: 'accounts.google.com' }, { header: { kid: google.key.kid } });
      await refusal(validator, forged, 'signature');
    });

    it('defaults to Google’s two issuers and Google’s JWKS, RS256 only, tokens of at most one hour', async () => {
      const config = gcpConfigSchema.parse({ projects: ['web-prod'] });
      expect(config.issuers).toEqual(['https://accounts.google.com', 'accounts.google.com']);
      expect(config.jwksUri).toBe(GOOGLE_JWKS_URI);
      expect(config.tokenTypes).toEqual([TOKEN_TYPE_GCP_ID_TOKEN, TOKEN_TYPE_STARFLY_GCP_WIF]);

      const validator = await gcpValidator({ ...googleIssuers(), projects: ['web-prod'] });
      const es256 = await LoopbackIssuer.start({ alg: 'ES256' });
      try {
        await refusal(validator, await mintGoogleToken(es256, BROKER, { iss: 'accounts.google.com' }), 'algorithm');
      } finally {
        await es256.close();
      }
      await refusal(validator, await googleToken(BROKER, { iss: 'accounts.google.com' }, { expiresIn: 7_200 }), 'lifetime');
    });
  });

  describe('claims', () => {
    it('requires aud to name the broker (or an audience the operator added)', async () => {
      const validator = await gcpValidator({ ...googleIssuers(), projects: ['web-prod'], allowedAudiences: ['tessera-gcp'] });
      await refusal(validator, await googleToken('https://other-service.example.test'), 'audience');
      await refusal(validator, await googleToken(`${BROKER}.evil.test`), 'audience');
      await expect(validator.validate(await googleToken(`${BROKER}/token`), context())).resolves.toBeDefined();
      await expect(validator.validate(await googleToken('tessera-gcp'), context())).resolves.toBeDefined();
      // The SPIFFE exchange door accepts only tokens that name the broker itself.
      const error = await validator.validate(await googleToken('tessera-gcp'), context({ brokerAudienceOnly: true })).catch((caught: unknown) => caught);
      expect((error as InvalidToken).reason).toBe('audience');
    });

    it('refuses tokens whose email Google did not verify, or that carry none', async () => {
      const validator = await gcpValidator({ ...googleIssuers(), serviceAccounts: [SERVICE_ACCOUNT] });
      await refusal(validator, await googleToken(BROKER, { email_verified: false }), 'claims', 'email_verified is not true');
      await refusal(validator, await googleToken(BROKER, { email_verified: 'true' }), 'claims', 'email_verified is not true');
      await refusal(validator, await googleToken(BROKER, { email_verified: undefined }), 'claims', 'email_verified is not true');
      await refusal(validator, await googleToken(BROKER, { email: undefined }), 'claims', 'email');
    });

    it('requires sub to be Google’s numeric account id', async () => {
      const validator = await gcpValidator({ ...googleIssuers(), projects: ['web-prod'] });
      await refusal(validator, await googleToken(BROKER, { sub: SERVICE_ACCOUNT }), 'claims', 'sub is not a numeric Google account id');
      await refusal(validator, await googleToken(BROKER, { sub: undefined }), 'claims');
    });
  });

  describe('allow-lists', () => {
    it('admits projects by id or by number, only from google.compute_engine', async () => {
      const byId = await gcpValidator({ ...googleIssuers(), projects: ['web-prod'] });
      const byNumber = await gcpValidator({ ...googleIssuers(), projects: ['405721773632'] });
      for (const validator of [byId, byNumber]) {
        await expect(validator.validate(await googleToken(BROKER), context())).resolves.toMatchObject({ subject: SERVICE_ACCOUNT_ID });
        const elsewhere = gceClaims().google as { compute_engine: Record<string, unknown> };
        const otherProject = { compute_engine: { ...elsewhere.compute_engine, project_id: 'web-staging', project_number: 1071284184436 } };
        await refusal(validator, await googleToken(BROKER, { google: otherProject }), 'claims', 'project not allowed');
        // format=standard, Cloud Run, a user account: no VM, so no project to vouch for it.
        await refusal(validator, await googleToken(BROKER, { google: undefined }), 'claims', 'google.compute_engine project absent');
        // A project named in a top-level claim is the caller's say-so, not Google's.
        await refusal(validator, await googleToken(BROKER, { google: undefined, project_id: 'web-prod' }), 'claims', 'google.compute_engine project absent');
      }
    });

    it('admits service accounts by exact email or pattern, case-insensitively', async () => {
      const validator = await gcpValidator({ ...googleIssuers(), serviceAccounts: ['*@web-prod.iam.gserviceaccount.com', 'ci-runner@build-tools.iam.gserviceaccount.com'] });
      const accepts = async (email: string) => (await validator.validate(await googleToken(BROKER, { email }), context())).attributes['gcp.email'];
      expect(await accepts(SERVICE_ACCOUNT)).toBe(SERVICE_ACCOUNT);
      expect(await accepts('Deployer@Web-Prod.iam.gserviceaccount.com')).toBe('Deployer@Web-Prod.iam.gserviceaccount.com');
      expect(await accepts('ci-runner@build-tools.iam.gserviceaccount.com')).toBe('ci-runner@build-tools.iam.gserviceaccount.com');
      for (const email of [
        'someone@gmail.com',
        'deployer@web-staging.iam.gserviceaccount.com',
        'x@y@web-prod.iam.gserviceaccount.com',
        'deployer@evil.web-prod.iam.gserviceaccount.com',
        'other@build-tools.iam.gserviceaccount.com',
      ]) {
        await refusal(validator, await googleToken(BROKER, { email }), 'claims', 'email not allowed');
      }
    });

    it('requires every configured allow-list to admit the token', async () => {
      const validator = await gcpValidator({ ...googleIssuers(), projects: ['web-prod'], serviceAccounts: ['*@web-prod.iam.gserviceaccount.com'] });
      await expect(validator.validate(await googleToken(BROKER), context())).resolves.toBeDefined();
      await refusal(validator, await googleToken(BROKER, { email: 'deployer@web-staging.iam.gserviceaccount.com' }), 'claims', 'email not allowed');
      await refusal(validator, await googleToken(BROKER, { google: undefined }), 'claims', 'google.compute_engine project absent');
    });

    it('matches `*` within one label and `**` across labels, never across the @', () => {
      const project = compileEmailPattern('*@web-prod.iam.gserviceaccount.com');
      expect(project('a@web-prod.iam.gserviceaccount.com')).toBe(true);
      expect(project('@web-prod.iam.gserviceaccount.com')).toBe(true);
      expect(project('a.b@web-prod.iam.gserviceaccount.com')).toBe(false);
      const anyProject = compileEmailPattern('deployer@*.iam.gserviceaccount.com');
      expect(anyProject('deployer@web-prod.iam.gserviceaccount.com')).toBe(true);
      expect(anyProject('deployer@a.b.iam.gserviceaccount.com')).toBe(false);
      const deep = compileEmailPattern('deployer@**.gserviceaccount.com');
      expect(deep('deployer@a.b.gserviceaccount.com')).toBe(true);
      expect(deep('deployer@x@y.gserviceaccount.com')).toBe(false);
      expect(compileEmailPattern('A@B.example.com')('a@b.EXAMPLE.com')).toBe(true);
    });
  });

  describe('config', () => {
    it('refuses a config without any allow-list: "any Google token" is impossible', () => {
      const result = gcpConfigSchema.safeParse({});
      expect(result.success).toBe(false);
      expect(result.error?.issues[0]).toMatchObject({ path: ['projects'] });
      expect(gcpConfigSchema.safeParse({ projects: [] }).success).toBe(false);
      expect(gcpConfigSchema.safeParse({ serviceAccounts: [] }).success).toBe(false);
    });

    it('refuses patterns that do not pin a domain, and malformed project references', () => {
      for (const pattern of ['*@*.com', '*@*', '**@**', 'deployer', '*@example.*', '*@gmail']) {
        expect(gcpConfigSchema.safeParse({ serviceAccounts: [pattern] }).success, pattern).toBe(false);
      }
      for (const project of ['Web-Prod', '123abc', '', 'ab', '0123']) {
        expect(gcpConfigSchema.safeParse({ projects: [project] }).success, project).toBe(false);
      }
      expect(gcpConfigSchema.safeParse({ projects: ['example.com:web-prod', '405721773632'] }).success).toBe(true);
      expect(gcpConfigSchema.safeParse({ projects: ['web-prod'], issuers: ['accounts.google.com', 'accounts.google.com'] }).success).toBe(false);
      expect(gcpConfigSchema.safeParse({ projects: ['web-prod'], clockSkewSeconds: 300 }).success).toBe(false);
      expect(gcpConfigSchema.safeParse({ projects: ['web-prod'], surprise: true }).success).toBe(false);
    });

    it('describes every field and converts to JSON Schema for the broker’s published schema', () => {
      for (const [field, schema] of Object.entries(gcpConfigSchema.shape)) expect(schema.description, field).toBeTruthy();
      expect(z.toJSONSchema(gcpConfigSchema, { io: 'input', target: 'draft-2020-12' })).toMatchObject({ type: 'object' });
    });
  });

  describe('attributes', () => {
    it('exposes exactly the gcp.* attributes, as strings that survive JSON', async () => {
      const validator = await gcpValidator({ ...googleIssuers(), projects: ['web-prod'] });
      const identity = await validator.validate(await googleToken(BROKER, { hd: 'example.com', name: 'Mallory' }), context());
      expect(identity.attributes).toEqual({
        'gcp.email': SERVICE_ACCOUNT,
        'gcp.sub': SERVICE_ACCOUNT_ID,
        'gcp.projectId': 'web-prod',
        'gcp.projectNumber': '405721773632',
        'gcp.zone': 'europe-west1-b',
        'gcp.instanceId': '6140691338085198734',
        'gcp.instanceName': 'web-1',
      });
      expect(Object.keys(identity.attributes).sort()).toEqual(Object.keys(GCP_ATTRIBUTES).sort());
      expect(JSON.parse(JSON.stringify(identity.attributes))).toEqual(identity.attributes);
      expect(JSON.parse(JSON.stringify(identity.claims))).toEqual(identity.claims);
    });

    it('leaves out what the token does not carry, and never passes non-string shapes', async () => {
      const validator = await gcpValidator({ ...googleIssuers(), serviceAccounts: [SERVICE_ACCOUNT] });
      const offGce = await validator.validate(await googleToken(BROKER, { google: undefined }), context());
      expect(offGce.attributes).toEqual({ 'gcp.email': SERVICE_ACCOUNT, 'gcp.sub': SERVICE_ACCOUNT_ID });
      const odd = await validator.validate(await googleToken(BROKER, { google: { compute_engine: { zone: { nested: 'x' }, instance_id: null, project_id: 7 } } }), context());
      expect(odd.attributes).toEqual({ 'gcp.email': SERVICE_ACCOUNT, 'gcp.sub': SERVICE_ACCOUNT_ID, 'gcp.projectId': '7' });
    });
  });
});

describe('service account patterns under gserviceaccount.com', () => {
  it('treats gserviceaccount.com like a public suffix: the project or the whole account is written out', () => {
    const accepts = (pattern: string) => gcpConfigSchema.safeParse({ serviceAccounts: [pattern] }).success;
    // Anyone can create a project: these would admit every project's accounts.
    expect(accepts('*@*.iam.gserviceaccount.com')).toBe(false);
    expect(accepts('**@**.gserviceaccount.com')).toBe(false);
    expect(accepts('*-compute@developer.gserviceaccount.com')).toBe(false);
    expect(accepts('x@iam.gserviceaccount.com')).toBe(false);
    expect(accepts('*@my-project.iam.gserviceaccount.com')).toBe(true);
    expect(accepts('123456789012-compute@developer.gserviceaccount.com')).toBe(true);
  });
});
