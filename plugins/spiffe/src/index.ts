import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import {
  CLIENT_ASSERTION_TYPE_JWT_SPIFFE,
  definePlugin,
  fetchableUrl,
  TOKEN_TYPE_JWT_SVID,
  TOKEN_TYPE_STARFLY_SPIFFE_SVID,
  tokens,
  type TokenTypeUrn,
} from '@tessera/plugin-sdk';
import { parseTrustDomain } from '@tessera/spiffe';
import { JWT_SVID_ALGORITHMS, JwtSvidVerifier } from './jwt-svid-verifier.js';
import { endpointSource, fileSource, TrustStore, workloadApiSource, type BundleSource } from './trust-store.js';

export { JWT_SVID_ALGORITHMS, JwtSvidVerifier } from './jwt-svid-verifier.js';
export { TrustStore } from './trust-store.js';

const trustDomainName = z.string().superRefine((value, ctx) => {
  try {
    parseTrustDomain(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: `not a trust domain name: ${(error as Error).message}` });
  }
});

const bundleSourceSchema = z.union([
  z.object({ workloadApi: z.literal(true) }).strict().describe('Streamed from the SPIFFE Workload API (FetchJWTBundles)'),
  z.object({ file: z.string().min(1) }).strict().describe('A SPIFFE bundle document on disk (relative to the config file); reloaded when it changes'),
  z
    .object({ endpoint: fetchableUrl, refreshSeconds: z.number().int().min(5).max(3_600).default(300) })
    .strict()
    .describe('A SPIFFE bundle endpoint (https_web); refreshed on its spiffe_refresh_hint, else refreshSeconds'),
]);

export const spiffeConfigSchema = z
  .object({
    tokenTypes: z
      .array(z.string().regex(/^urn:\S+$/, 'must be a urn:'))
      .min(1)
      .default([TOKEN_TYPE_JWT_SVID, TOKEN_TYPE_STARFLY_SPIFFE_SVID])
      .describe('Token type URNs this validator answers for'),
    trustDomains: z
      .array(
        z
          .object({
            name: trustDomainName.describe('Trust domain name, e.g. example.org'),
            bundle: bundleSourceSchema,
            algorithms: z.array(z.enum(JWT_SVID_ALGORITHMS)).min(1).default([...JWT_SVID_ALGORITHMS]),
          })
          .strict(),
      )
      .min(1)
      .refine((list) => new Set(list.map((entry) => entry.name)).size === list.length, 'trust domain listed twice')
      .describe('Trusted trust domains; a JWT-SVID is verified only with the bundle of the domain in its sub'),
    workloadApi: z
      .object({ address: z.string().min(1).optional().describe('unix:///path or tcp://ip:port; default SPIFFE_ENDPOINT_SOCKET') })
      .strict()
      .default({}),
    allowedAudiences: z.array(z.string().min(1)).default([]).describe('Audiences accepted besides the broker (never for client assertions or the SPIFFE exchange door)'),
    clockSkewSeconds: z.number().int().min(0).max(300).default(30),
    maxTokenLifetimeSeconds: z.number().int().positive().max(86_400).default(3_600).describe('Refuse JWT-SVIDs whose exp - iat exceeds this'),
    maxTokenBytes: z.number().int().positive().max(65_536).default(8_192),
    clientAuthentication: z.boolean().default(true).describe('Also verify JWT-SVID client assertions (client_assertion_type jwt-spiffe)'),
    startupWaitMs: z.number().int().min(0).max(60_000).default(5_000).describe('How long startup waits for the first bundles'),
  })
  .strict();

export type SpiffeConfig = z.output<typeof spiffeConfigSchema>;

export default definePlugin({
  name: 'spiffe',
  version: '0.1.0',
  apiVersion: '^1.2',
  description: 'Validates SPIFFE JWT-SVIDs against per-trust-domain bundles; authenticates clients by JWT-SVID',
  config: spiffeConfigSchema,
  deps: { http: tokens.httpFetcher, log: tokens.logger },
  async init({ config, deps, configDir, purpose }) {
    const log = deps.log.child({ plugin: 'spiffe' });
    // A read-only command reads bundle files (local, and a missing one is a config error) but dials nothing.
    const serving = purpose !== 'check';
    const store = new TrustStore(new Set(config.trustDomains.map((domain) => domain.name)), log);
    const sources: BundleSource[] = [];
    const close = () => sources.forEach((source) => source.close());
    try {
      const streamed = config.trustDomains.filter((domain) => 'workloadApi' in domain.bundle).map((domain) => domain.name);
      if (streamed.length > 0 && serving) {
        const source = workloadApiSource(config.workloadApi.address, streamed, store, log);
        sources.push(source);
        for (const name of streamed) store.loading(name, source.ready);
      }
      for (const domain of config.trustDomains) {
        const from = domain.bundle;
        let source: BundleSource | undefined;
        if ('file' in from) source = fileSource(isAbsolute(from.file) ? from.file : resolve(configDir, from.file), domain.name, store, log);
        if ('endpoint' in from && serving) source = endpointSource(from.endpoint, domain.name, store, deps.http, log, { refreshSeconds: from.refreshSeconds });
        if (source) {
          sources.push(source);
          store.loading(domain.name, source.ready);
        }
      }
    } catch (error) {
      close();
      throw new Error(`plugin spiffe: ${(error as Error).message}`);
    }
    // Start serving even if a source is late: tokens from that domain get 503 until its bundle arrives.
    const waited = await Promise.race([Promise.all(sources.map((source) => source.ready)).then(() => true), delay(config.startupWaitMs)]);
    const missing = config.trustDomains.map((domain) => domain.name).filter((name) => !store.get(name));
    if (!waited || missing.length > 0) log.warn({ missing }, 'SPIFFE bundles not available at startup; tokens from these trust domains are refused with 503 until they arrive');

    const verifier = new JwtSvidVerifier(store, {
      algorithms: new Map(config.trustDomains.map((domain) => [domain.name, domain.algorithms])),
      allowedAudiences: config.allowedAudiences,
      clockSkewSeconds: config.clockSkewSeconds,
      maxTokenLifetimeSeconds: config.maxTokenLifetimeSeconds,
      maxTokenBytes: config.maxTokenBytes,
    });
    return {
      // Workload identities from trust domains this deployment trusts may act for others (delegation).
      validators: [
        { tokenTypes: config.tokenTypes as TokenTypeUrn[], actorTrust: 'workload', clockSkewSeconds: config.clockSkewSeconds, caching: {}, validate: (token, ctx) => verifier.verify(token, ctx) },
      ],
      ...(config.clientAuthentication
        ? { clientAssertionVerifiers: [{ assertionTypes: [CLIENT_ASSERTION_TYPE_JWT_SPIFFE], clockSkewSeconds: config.clockSkewSeconds, verify: (token, ctx) => verifier.verify(token, ctx) }] }
        : {}),
      close,
    };
  },
});

function delay(ms: number): Promise<false> {
  return new Promise((resolve) => setTimeout(() => resolve(false), ms).unref());
}
