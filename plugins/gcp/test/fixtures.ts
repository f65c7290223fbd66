import type { JWTPayload } from 'jose';
import { GuardedFetcher, RemoteJwksCache, silentLogger } from '@tessera/core';
import type { SubjectValidator, ValidationContext } from '@tessera/plugin-sdk';
import type { LoopbackIssuer, MintOptions } from '@tessera/plugin-testkit';
import gcpPlugin, { gcpConfigSchema, TOKEN_TYPE_GCP_ID_TOKEN } from '../src/index.js';

export const BROKER = 'https://broker.example.test';
export const SERVICE_ACCOUNT = 'deployer@web-prod.iam.gserviceaccount.com';
export const SERVICE_ACCOUNT_ID = '104479897743394244856';

/** A test-only issuer plugin (loaded by path) so policy tests need no real token issuer. */

/** Claims shaped like a real metadata-server token (`format=full`) of a VM in project web-prod. */
export function gceClaims(overrides: JWTPayload = {}): JWTPayload {
  return {
    sub: SERVICE_ACCOUNT_ID,
    azp: SERVICE_ACCOUNT_ID,
    email: SERVICE_ACCOUNT,
    email_verified: true,
    google: {
      compute_engine: {
        instance_creation_timestamp: 1733252450,
        instance_id: '6140691338085198734',
        instance_name: 'web-1',
        project_id: 'web-prod',
        project_number: 405721773632,
        zone: 'europe-west1-b',
      },
    },
    ...overrides,
  };
}

export function mintGoogleToken(google: LoopbackIssuer, audience: string, overrides: JWTPayload = {}, options: MintOptions = {}): Promise<string> {
  return google.mint({ aud: audience, ...gceClaims(overrides) }, options);
}

export function context(overrides: Partial<ValidationContext> = {}): ValidationContext {
  return {
    role: 'subject',
    tokenType: TOKEN_TYPE_GCP_ID_TOKEN,
    brokerIssuer: BROKER,
    tokenEndpoint: `${BROKER}/token`,
    now: new Date(),
    signal: AbortSignal.timeout(5_000),
    ...overrides,
  };
}

/** The plugin's own init with the broker's real fetcher and JWKS cache (loopback allowed). */
export async function gcpValidator(config: unknown): Promise<SubjectValidator> {
  const http = new GuardedFetcher({ allowLoopbackHttp: true, timeoutMs: 2_000, maxResponseBytes: 65_536 });
  const jwks = new RemoteJwksCache(http, { now: () => new Date() }, silentLogger);
  const { validators } = await gcpPlugin.init({ config: gcpConfigSchema.parse(config), deps: { jwks, http, log: silentLogger }, configDir: process.cwd() });
  return validators![0]!;
}
