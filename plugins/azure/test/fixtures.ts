import { randomUUID } from 'node:crypto';
import type { JWTPayload } from 'jose';
import { GuardedFetcher, RemoteJwksCache, silentLogger } from '@tessera/core';
import type { ValidationContext } from '@tessera/plugin-sdk';
import { LoopbackIssuer, type MintOptions } from '@tessera/plugin-testkit';
import azurePlugin, { azureConfigSchema, TOKEN_TYPE_AZURE_MI, type AzureManagedIdentityValidator } from '../src/index.js';

export const BROKER = 'https://broker.example.test';
export const TENANT = '3f2d8a61-0c4e-4b7a-9d52-7e1f0a6b9c11';
export const SECOND_TENANT = 'b1e0c7d2-5a3f-4e8b-8c6d-2f9a1b3c4d5e';
/** Serves a v2.0 discovery document naming the multi-tenant template issuer instead of its own. */
export const TEMPLATE_TENANT = '0d9c8b7a-6f5e-4d3c-8b2a-190817263544';
/** Serves a v2.0 discovery document whose jwks_uri points away from the authority. */
export const OFFSITE_TENANT = '5e4d3c2b-1a09-4f8e-9d7c-6b5a49382716';
export const FOREIGN_TENANT = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';

/** Tessera's app registration: client id (v2.0 aud) and Application ID URI (a v1.0 aud). */
export const APP_CLIENT_ID = '6e74172b-be56-4843-9ff4-e66a39bb12e3';
export const APP_ID_URI = 'api://tessera-broker';

export const MI_OBJECT_ID = '02223b6b-aa1d-42d4-9ec0-1b2bb9194438';
export const MI_CLIENT_ID = '75dbe77f-10a3-4e59-85fd-8c127544f17c';
export const SUBSCRIPTION = '8e1f6a2b-3c4d-4e5f-9a0b-1c2d3e4f5a6b';
export const MI_RESOURCE_ID = `/subscriptions/${SUBSCRIPTION}/resourcegroups/Payments-Prod/providers/Microsoft.ManagedIdentity/userAssignedIdentities/payments-api`;

/** A test-only issuer plugin (loaded by path) so policy tests need no real token issuer. */

export const v1Issuer = (tenant: string) => `https://sts.windows.net/${tenant}/`;
export const authorityOf = (entra: LoopbackIssuer) => new URL(entra.issuer).origin;
export const v2Issuer = (entra: LoopbackIssuer, tenant: string) => `${authorityOf(entra)}/${tenant}/v2.0`;

/**
 * A Microsoft Entra authority on loopback. The LoopbackIssuer itself is TENANT's v2.0 endpoint
 * (`{authority}/{tid}/v2.0`, its discovery and JWKS); routes add the v1.0 metadata of each tenant
 * (`{authority}/{tid}/.well-known/openid-configuration`, issuer `https://sts.windows.net/{tid}/`, keys
 * `{authority}/{tid}/discovery/keys`), SECOND_TENANT's v2.0 endpoint, and two misbehaving tenants.
 */
export async function startEntra(): Promise<LoopbackIssuer> {
  let entra: LoopbackIssuer | undefined;
  const origin = () => authorityOf(entra!);
  const keys = () => ({ keys: [entra!.key.publicJwk] });
  const routes: Record<string, () => unknown> = {};
  for (const tenant of [TENANT, SECOND_TENANT]) {
    routes[`/${tenant}/.well-known/openid-configuration`] = () => ({ issuer: v1Issuer(tenant), jwks_uri: `${origin()}/${tenant}/discovery/keys` });
    routes[`/${tenant}/discovery/keys`] = keys;
  }
  routes[`/${SECOND_TENANT}/v2.0/.well-known/openid-configuration`] = () => ({ issuer: `${origin()}/${SECOND_TENANT}/v2.0`, jwks_uri: `${origin()}/${SECOND_TENANT}/discovery/v2.0/keys` });
  routes[`/${SECOND_TENANT}/discovery/v2.0/keys`] = keys;
  routes[`/${TEMPLATE_TENANT}/v2.0/.well-known/openid-configuration`] = () => ({ issuer: `${origin()}/{tenantid}/v2.0`, jwks_uri: `${origin()}/${TEMPLATE_TENANT}/discovery/v2.0/keys` });
  routes[`/${TEMPLATE_TENANT}/discovery/v2.0/keys`] = keys;
  routes[`/${OFFSITE_TENANT}/v2.0/.well-known/openid-configuration`] = () => ({ issuer: `${origin()}/${OFFSITE_TENANT}/v2.0`, jwks_uri: `http://localhost:${new URL(origin()).port}/${OFFSITE_TENANT}/keys` });
  entra = await LoopbackIssuer.start({ path: `/${TENANT}/v2.0`, alg: 'RS256', routes });
  return entra;
}

export interface MiToken {
  readonly version?: '1.0' | '2.0';
  readonly tenant?: string;
  readonly audience?: string;
}

/** Claims shaped like a real managed identity access token (app-only, certificate client, xms_mirid). */
export function miClaims(entra: LoopbackIssuer, { version = '2.0', tenant = TENANT, audience }: MiToken = {}, overrides: JWTPayload = {}): JWTPayload {
  const common = { tid: tenant, oid: MI_OBJECT_ID, sub: MI_OBJECT_ID, idtyp: 'app', uti: randomUUID(), xms_mirid: MI_RESOURCE_ID };
  const claims =
    version === '1.0'
      ? { ...common, iss: v1Issuer(tenant), aud: audience ?? APP_ID_URI, idp: v1Issuer(tenant), appid: MI_CLIENT_ID, appidacr: '2', ver: '1.0' }
      : { ...common, iss: v2Issuer(entra, tenant), aud: audience ?? APP_CLIENT_ID, azp: MI_CLIENT_ID, azpacr: '2', ver: '2.0' };
  return { ...claims, nbf: Math.floor(Date.now() / 1000), ...overrides };
}

export function mintMiToken(entra: LoopbackIssuer, token: MiToken = {}, overrides: JWTPayload = {}, options: MintOptions = {}): Promise<string> {
  return entra.mint(miClaims(entra, token, overrides), options);
}

export function context(overrides: Partial<ValidationContext> = {}): ValidationContext {
  return {
    role: 'subject',
    tokenType: TOKEN_TYPE_AZURE_MI,
    brokerIssuer: BROKER,
    tokenEndpoint: `${BROKER}/token`,
    now: new Date(),
    signal: AbortSignal.timeout(5_000),
    ...overrides,
  };
}

/** The config every test starts from: both tenants, both versions, the loopback authority. */
export const baseConfig = (entra: LoopbackIssuer) => ({ tenants: [TENANT, SECOND_TENANT], audiences: [APP_CLIENT_ID, APP_ID_URI], authority: authorityOf(entra) });

/** The plugin's own init with the broker's real fetcher and JWKS cache (loopback allowed). */
export async function azureValidator(config: unknown): Promise<AzureManagedIdentityValidator> {
  const http = new GuardedFetcher({ allowLoopbackHttp: true, timeoutMs: 2_000, maxResponseBytes: 65_536 });
  const jwks = new RemoteJwksCache(http, { now: () => new Date() }, silentLogger);
  const { validators } = await azurePlugin.init({ config: azureConfigSchema.parse(config), deps: { jwks, http, log: silentLogger }, configDir: process.cwd() });
  return validators![0] as AzureManagedIdentityValidator;
}
