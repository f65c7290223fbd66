import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { InvalidToken, TemporarilyUnavailable, type SubjectValidator, type TokenRejection, type ValidationContext } from '@tessera/plugin-sdk';
import { LoopbackIssuer } from '@tessera/plugin-testkit';
import { azureConfigSchema, TOKEN_TYPE_AZURE_MI, TOKEN_TYPE_STARFLY_AZURE_MI, type AzureManagedIdentityValidator } from '../src/index.js';
import { compileResourceIdPattern, parseResourceId } from '../src/resource-id.js';
import {
  APP_CLIENT_ID,
  APP_ID_URI,
  authorityOf,
  azureValidator,
  baseConfig,
  BROKER,
  context,
  FOREIGN_TENANT,
  MI_CLIENT_ID,
  MI_OBJECT_ID,
  MI_RESOURCE_ID,
  miClaims,
  mintMiToken,
  OFFSITE_TENANT,
  SECOND_TENANT,
  startEntra,
  SUBSCRIPTION,
  TEMPLATE_TENANT,
  TENANT,
  v1Issuer,
  v2Issuer,
} from './fixtures.js';

async function refusal(validator: SubjectValidator, token: string, reason: TokenRejection, detail?: string, ctx: ValidationContext = context()): Promise<InvalidToken> {
  const error = await validator.validate(token, ctx).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error, 'the token must be refused').toBeInstanceOf(InvalidToken);
  expect((error as InvalidToken).reason).toBe(reason);
  if (detail) expect((error as InvalidToken).detail).toBe(`${reason}: ${detail}`);
  return error as InvalidToken;
}

describe('@tessera/plugin-azure', () => {
  let entra: LoopbackIssuer;
  let validator: AzureManagedIdentityValidator;
  beforeAll(async () => {
    entra = await startEntra();
    validator = await azureValidator(baseConfig(entra));
  });
  afterAll(async () => {
    await entra?.close();
  });

  describe('issuers pinned per tenant', () => {
    it('accepts a v1.0 token from sts.windows.net/{tid}/, with keys from the tenant’s v1.0 discovery', async () => {
      const identity = await validator.validate(await mintMiToken(entra, { version: '1.0' }), context());
      expect(identity).toMatchObject({ issuer: v1Issuer(TENANT), subject: MI_OBJECT_ID, audiences: [APP_ID_URI], tokenType: TOKEN_TYPE_AZURE_MI });
      expect(identity.attributes['azure.appId']).toBe(MI_CLIENT_ID);
    });

    it('accepts a v2.0 token from {authority}/{tid}/v2.0, with keys from the tenant’s v2.0 discovery', async () => {
      const identity = await validator.validate(await mintMiToken(entra, { version: '2.0' }), context());
      expect(identity).toMatchObject({ issuer: v2Issuer(entra, TENANT), subject: MI_OBJECT_ID, audiences: [APP_CLIENT_ID] });
      expect(identity.attributes['azure.appId']).toBe(MI_CLIENT_ID);
      const second = await validator.validate(await mintMiToken(entra, { version: '2.0', tenant: SECOND_TENANT }), context());
      expect(second).toMatchObject({ issuer: v2Issuer(entra, SECOND_TENANT), attributes: { 'azure.tenantId': SECOND_TENANT } });
    });

    it('generates exactly two issuers per tenant from the tenants list, and only the versions configured', async () => {
      expect(validator.issuers).toEqual([
        v1Issuer(TENANT),
        v2Issuer(entra, TENANT),
        v1Issuer(SECOND_TENANT),
        v2Issuer(entra, SECOND_TENANT),
      ]);
      const v2Only = await azureValidator({ ...baseConfig(entra), tokenVersions: ['2.0'] });
      await refusal(v2Only, await mintMiToken(entra, { version: '1.0' }), 'untrusted_issuer');
      await expect(v2Only.validate(await mintMiToken(entra), context())).resolves.toBeDefined();
    });

    it('refuses a tenant that is not allowed, whatever its issuer looks like, without fetching anything', async () => {
      const before = entra.discoveryFetches;
      await refusal(validator, await mintMiToken(entra, { version: '1.0', tenant: FOREIGN_TENANT }), 'untrusted_issuer');
      await refusal(validator, await mintMiToken(entra, { version: '2.0', tenant: FOREIGN_TENANT }), 'untrusted_issuer');
      // The multi-tenant template and the tenant-independent aliases are never issuers.
      for (const iss of [`${authorityOf(entra)}/{tenantid}/v2.0`, `${authorityOf(entra)}/common/v2.0`, `${authorityOf(entra)}/organizations/v2.0`, 'https://sts.windows.net/{tenantid}/']) {
        await refusal(validator, await mintMiToken(entra, {}, { iss }), 'untrusted_issuer');
      }
      // Exact comparison: no trailing-slash or case variants of an allowed issuer.
      for (const iss of [`https://sts.windows.net/${TENANT}`, `https://sts.windows.net/${TENANT.toUpperCase()}/`, `${v2Issuer(entra, TENANT)}/`]) {
        await refusal(validator, await mintMiToken(entra, { version: '1.0' }, { iss }), 'untrusted_issuer');
      }
      expect(entra.discoveryFetches).toBe(before);
    });

    it('refuses a token whose tid is not the tenant of its issuer', async () => {
      await refusal(validator, await mintMiToken(entra, { version: '2.0' }, { tid: SECOND_TENANT }), 'claims', 'tid does not match the issuer tenant');
      await refusal(validator, await mintMiToken(entra, { version: '1.0' }, { tid: FOREIGN_TENANT }), 'claims', 'tid does not match the issuer tenant');
      await refusal(validator, await mintMiToken(entra, { version: '1.0' }, { tid: TENANT.toUpperCase() }), 'claims', 'tid does not match the issuer tenant');
      await refusal(validator, await mintMiToken(entra, { version: '1.0' }, { tid: undefined }), 'claims', 'tid does not match the issuer tenant');
    });

    it('refuses a token whose ver is not the version of its issuer', async () => {
      await refusal(validator, await mintMiToken(entra, { version: '2.0' }, { ver: '1.0' }), 'claims', 'ver does not match the issuer');
      await refusal(validator, await mintMiToken(entra, { version: '1.0' }, { ver: undefined }), 'claims', 'ver does not match the issuer');
    });

    it('refuses keys of another issuer: a token signed elsewhere in the tenant’s name fails its signature', async () => {
      const stranger = await LoopbackIssuer.start({ alg: 'RS256' });
      try {
        const forged = await stranger.mint(miClaims(entra, { version: '1.0' }), { header: { kid: entra.key.kid } });
        await refusal(validator, forged, 'signature');
      } finally {
        await stranger.close();
      }
    });

    it('refuses a tenant whose discovery names another issuer or keeps keys off the authority', async () => {
      for (const tenant of [TEMPLATE_TENANT, OFFSITE_TENANT]) {
        const misled = await azureValidator({ ...baseConfig(entra), tenants: [tenant], tokenVersions: ['2.0'] });
        await refusal(misled, await mintMiToken(entra, { tenant }), 'untrusted_issuer');
      }
    });

    it('reports an unreachable authority as an outage (503), not as a bad token', async () => {
      const dark = await startEntra();
      const cold = await azureValidator(baseConfig(dark));
      const token = await mintMiToken(dark);
      dark.available = false;
      try {
        const fresh = await azureValidator(baseConfig(dark));
        const error = await fresh.validate(token, context()).catch((caught: unknown) => caught);
        expect(error).toBeInstanceOf(TemporarilyUnavailable);
        // Keys already fetched keep serving through the outage.
        await expect(cold.validate(token, context())).resolves.toBeDefined();
      } finally {
        await dark.close();
      }
    });
  });

  describe('audience: the configured app, nothing looser', () => {
    it('accepts the app’s client id and its Application ID URI, exactly as configured', async () => {
      await expect(validator.validate(await mintMiToken(entra, { version: '1.0', audience: APP_CLIENT_ID }), context())).resolves.toBeDefined();
      await expect(validator.validate(await mintMiToken(entra, { version: '1.0', audience: APP_ID_URI }), context())).resolves.toBeDefined();
      await refusal(validator, await mintMiToken(entra, { version: '1.0', audience: `${APP_ID_URI}/` }), 'audience');
    });

    it('refuses a token for another app, even one naming the broker', async () => {
      await refusal(validator, await mintMiToken(entra, { audience: 'https://management.azure.com/' }), 'audience');
      await refusal(validator, await mintMiToken(entra, { audience: '00000003-0000-0000-c000-000000000000' }), 'audience');
      // JwtVerifier lets a token naming the broker through; the plugin still requires the app.
      await refusal(validator, await mintMiToken(entra, { audience: BROKER }), 'audience', 'aud is not the configured app');
      await refusal(validator, await mintMiToken(entra, {}, { aud: [APP_CLIENT_ID, 'https://management.azure.com/'] }), 'audience', 'aud is not the configured app');
      await refusal(validator, await mintMiToken(entra, {}, { aud: [APP_CLIENT_ID, BROKER] }), 'audience', 'aud is not the configured app');
    });

    it('accepts the app audience only when it is the broker itself on the SPIFFE exchange door', async () => {
      await refusal(validator, await mintMiToken(entra), 'audience', undefined, context({ brokerAudienceOnly: true }));
      const named = await azureValidator({ ...baseConfig(entra), audiences: [BROKER] });
      await expect(named.validate(await mintMiToken(entra, { audience: BROKER }), context({ brokerAudienceOnly: true }))).resolves.toBeDefined();
    });
  });

  describe('managed identities only', () => {
    it('refuses delegated (user) tokens and tokens typed other than app', async () => {
      await refusal(validator, await mintMiToken(entra, {}, { scp: 'user_impersonation', idtyp: undefined }), 'claims', 'scp present: delegated token');
      await refusal(validator, await mintMiToken(entra, {}, { idtyp: 'user' }), 'claims', 'idtyp is not app');
      await expect(validator.validate(await mintMiToken(entra, {}, { idtyp: undefined }), context())).resolves.toBeDefined();
      const strict = await azureValidator({ ...baseConfig(entra), requireIdtyp: true });
      await refusal(strict, await mintMiToken(entra, {}, { idtyp: undefined }), 'claims', 'idtyp is not app');
      await expect(strict.validate(await mintMiToken(entra), context())).resolves.toBeDefined();
    });

    it('requires certificate client authentication (appidacr / azpacr = 2) unless turned off', async () => {
      await refusal(validator, await mintMiToken(entra, { version: '1.0' }, { appidacr: '1' }), 'claims', 'appidacr is not certificate');
      await refusal(validator, await mintMiToken(entra, { version: '2.0' }, { azpacr: '0' }), 'claims', 'azpacr is not certificate');
      await refusal(validator, await mintMiToken(entra, { version: '2.0' }, { azpacr: 2 }), 'claims', 'azpacr is not certificate');
      const lenient = await azureValidator({ ...baseConfig(entra), requireCertificateClient: false });
      await expect(lenient.validate(await mintMiToken(entra, { version: '1.0' }, { appidacr: '1' }), context())).resolves.toBeDefined();
    });

    it('requires oid to be a GUID and makes it the subject', async () => {
      await refusal(validator, await mintMiToken(entra, {}, { oid: 'payments-api' }), 'claims', 'oid');
      await refusal(validator, await mintMiToken(entra, {}, { oid: undefined }), 'claims', 'oid');
    });

    it('accepts the lifetime managed identity tokens really have (about 24 h) and no more than configured', async () => {
      await expect(validator.validate(await mintMiToken(entra, {}, {}, { expiresIn: 86_700 }), context())).resolves.toBeDefined();
      await refusal(validator, await mintMiToken(entra, {}, {}, { expiresIn: 93_600 }), 'lifetime');
    });

    it('admits only allowed object ids and resource ids when those lists are set', async () => {
      const byOid = await azureValidator({ ...baseConfig(entra), objectIds: [MI_OBJECT_ID.toUpperCase()] });
      await expect(byOid.validate(await mintMiToken(entra), context())).resolves.toBeDefined();
      await refusal(byOid, await mintMiToken(entra, {}, { oid: '11111111-2222-4333-8444-555555555555' }), 'claims', 'oid not allowed');

      const byResource = await azureValidator({ ...baseConfig(entra), resourceIds: [`/subscriptions/${SUBSCRIPTION}/resourceGroups/payments-*/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*`] });
      await expect(byResource.validate(await mintMiToken(entra), context())).resolves.toBeDefined();
      const elsewhere = `/subscriptions/${SUBSCRIPTION}/resourcegroups/payments-prod/providers/Microsoft.Compute/virtualMachines/payments-api`;
      await refusal(byResource, await mintMiToken(entra, {}, { xms_mirid: elsewhere }), 'claims', 'xms_mirid not allowed');
      await refusal(byResource, await mintMiToken(entra, {}, { xms_mirid: `${MI_RESOURCE_ID}/extra` }), 'claims', 'xms_mirid not allowed');
      await refusal(byResource, await mintMiToken(entra, {}, { xms_mirid: undefined }), 'claims', 'xms_mirid not allowed');
    });
  });

  describe('attributes', () => {
    it('exposes tenant, object, app, resource, subscription and resource group, JSON-safe', async () => {
      const identity = await validator.validate(await mintMiToken(entra, {}, { roles: ['Exchange.Write'], name: 'ignored', upn: 'ignored@example.test' }), context());
      expect(identity.attributes).toEqual({
        'azure.tenantId': TENANT,
        'azure.objectId': MI_OBJECT_ID,
        'azure.appId': MI_CLIENT_ID,
        'azure.roles': ['Exchange.Write'],
        'azure.resourceId': MI_RESOURCE_ID.toLowerCase(),
        'azure.subscriptionId': SUBSCRIPTION,
        'azure.resourceGroup': 'payments-prod',
      });
      expect(JSON.parse(JSON.stringify(identity.attributes))).toEqual(identity.attributes);
      expect(JSON.parse(JSON.stringify(identity.claims))).toEqual(identity.claims);
      expect(identity.claims.xms_mirid).toBe(MI_RESOURCE_ID);
    });

    it('leaves resource attributes out when xms_mirid is absent or not a resource id', async () => {
      const bare = await validator.validate(await mintMiToken(entra, {}, { xms_mirid: undefined }), context());
      expect(Object.keys(bare.attributes).sort()).toEqual(['azure.appId', 'azure.objectId', 'azure.tenantId']);
      const odd = await validator.validate(await mintMiToken(entra, {}, { xms_mirid: '/not/a/resource' }), context());
      expect(odd.attributes['azure.resourceId']).toBe('/not/a/resource');
      expect(odd.attributes).not.toHaveProperty('azure.subscriptionId');
      const nonString = await validator.validate(await mintMiToken(entra, {}, { xms_mirid: { id: MI_RESOURCE_ID } }), context());
      expect(nonString.attributes).not.toHaveProperty('azure.resourceId');
    });
  });

  describe('xms_mirid parsing', () => {
    it('reads subscription and resource group case-insensitively, lowercased', () => {
      expect(parseResourceId(MI_RESOURCE_ID)).toEqual({ subscriptionId: SUBSCRIPTION, resourceGroup: 'payments-prod' });
      const vm = `/subscriptions/${SUBSCRIPTION.toUpperCase()}/resourceGroups/RG_1.(a)/providers/Microsoft.Compute/virtualMachines/vm-1`;
      expect(parseResourceId(vm)).toEqual({ subscriptionId: SUBSCRIPTION, resourceGroup: 'rg_1.(a)' });
      expect(parseResourceId(`/SUBSCRIPTIONS/${SUBSCRIPTION}/RESOURCEGROUPS/Ops`)).toEqual({ subscriptionId: SUBSCRIPTION, resourceGroup: 'ops' });
    });

    it('returns only what is well-formed, never a guess', () => {
      expect(parseResourceId(`/subscriptions/${SUBSCRIPTION}`)).toEqual({ subscriptionId: SUBSCRIPTION });
      expect(parseResourceId(`/subscriptions/${SUBSCRIPTION}/providers/Microsoft.Authorization/x`)).toEqual({ subscriptionId: SUBSCRIPTION });
      expect(parseResourceId(`/subscriptions/${SUBSCRIPTION}/resourceGroups//providers`)).toEqual({ subscriptionId: SUBSCRIPTION });
      expect(parseResourceId(`/subscriptions/${SUBSCRIPTION}/resourceGroups/a%2Fb`)).toEqual({ subscriptionId: SUBSCRIPTION });
      for (const bad of ['', '/', 'subscriptions/x', `subscriptions/${SUBSCRIPTION}/resourcegroups/a`, '/subscriptions/not-a-guid/resourcegroups/a', `//subscriptions/${SUBSCRIPTION}`]) {
        expect(parseResourceId(bad), bad).toBeUndefined();
      }
    });

    it('matches resource id patterns: * within a segment, ** across, case-insensitive', () => {
      const rg = compileResourceIdPattern(`/subscriptions/${SUBSCRIPTION}/resourceGroups/payments-*/**`);
      expect(rg(MI_RESOURCE_ID)).toBe(true);
      expect(rg(`/subscriptions/${SUBSCRIPTION}/resourcegroups/billing/providers/x/y/payments-z`)).toBe(false);
      const one = compileResourceIdPattern('/subscriptions/*/resourceGroups/ops/providers/Microsoft.ManagedIdentity/userAssignedIdentities/*');
      expect(one(`/subscriptions/${SUBSCRIPTION}/resourcegroups/ops/providers/microsoft.managedidentity/userassignedidentities/agent`)).toBe(true);
      expect(one(`/subscriptions/${SUBSCRIPTION}/resourcegroups/ops/providers/microsoft.managedidentity/userassignedidentities/a/b`)).toBe(false);
    });
  });

  describe('config', () => {
    it('requires tenant GUIDs and app audiences; lowercases GUIDs', () => {
      for (const tenants of [[], ['common'], ['organizations'], ['contoso.onmicrosoft.com'], ['{tenantid}']]) {
        expect(azureConfigSchema.safeParse({ tenants, audiences: [APP_CLIENT_ID] }).success, JSON.stringify(tenants)).toBe(false);
      }
      expect(azureConfigSchema.safeParse({ tenants: [TENANT] }).success).toBe(false);
      expect(azureConfigSchema.safeParse({ tenants: [TENANT], audiences: [] }).success).toBe(false);
      const parsed = azureConfigSchema.parse({ tenants: [TENANT.toUpperCase()], audiences: [APP_CLIENT_ID], authority: 'https://login.microsoftonline.us/' });
      expect(parsed).toMatchObject({
        tenants: [TENANT],
        authority: 'https://login.microsoftonline.us',
        v1IssuerBase: 'https://sts.windows.net',
        tokenVersions: ['1.0', '2.0'],
        tokenTypes: [TOKEN_TYPE_AZURE_MI, TOKEN_TYPE_STARFLY_AZURE_MI],
        requireCertificateClient: true,
        requireIdtyp: false,
      });
    });

    it('refuses malformed allow-lists, plain-http authorities and unknown keys', () => {
      const base = { tenants: [TENANT], audiences: [APP_CLIENT_ID] };
      expect(azureConfigSchema.safeParse({ ...base, objectIds: ['payments-api'] }).success).toBe(false);
      expect(azureConfigSchema.safeParse({ ...base, resourceIds: ['**'] }).success).toBe(false);
      expect(azureConfigSchema.safeParse({ ...base, resourceIds: ['payments-*'] }).success).toBe(false);
      expect(azureConfigSchema.safeParse({ ...base, authority: 'http://login.microsoftonline.com' }).success).toBe(false);
      expect(azureConfigSchema.safeParse({ ...base, clockSkewSeconds: 120 }).success).toBe(false);
      expect(azureConfigSchema.safeParse({ ...base, multiTenant: true }).success).toBe(false);
    });

    it('describes every field and converts to JSON Schema for the broker’s published schema', () => {
      for (const [field, schema] of Object.entries(azureConfigSchema.shape)) expect(schema.description, field).toBeTruthy();
      expect(z.toJSONSchema(azureConfigSchema, { io: 'input', target: 'draft-2020-12' })).toMatchObject({ type: 'object' });
    });
  });
});
