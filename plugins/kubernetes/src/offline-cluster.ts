import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { JwtVerifier, type HttpFetcher, type JwksCache, type Logger, type ValidationContext, type VerifiedIdentity } from '@tessera/plugin-sdk';
import type { OfflineClusterConfig } from './config.js';
import { JwksFile } from './jwks-file.js';
import { projectedServiceAccount, serviceAccountAttributes } from './service-account.js';

export interface OfflineClusterDeps {
  readonly jwks: JwksCache;
  readonly http: HttpFetcher;
  readonly log: Logger;
}

/**
 * A cluster whose tokens are verified locally: the SDK's `JwtVerifier` with this cluster's issuer and
 * keys only (exact `iss`, algorithm allow-list, `exp` required, `aud` naming the broker, lifetime cap).
 * Offline checks cannot see a deleted pod or service account: the token's short life is the bound.
 */
export class OfflineCluster {
  private constructor(
    readonly config: OfflineClusterConfig,
    private readonly verifier: JwtVerifier,
    private readonly file: JwksFile | undefined,
  ) {}

  static async create(config: OfflineClusterConfig, deps: OfflineClusterDeps, configDir: string): Promise<OfflineCluster> {
    let file: JwksFile | undefined;
    let jwksUri = config.jwksUri;
    if (config.jwksFile) {
      const path = resolve(configDir, config.jwksFile);
      try {
        file = await JwksFile.open(path, deps.log.child({ cluster: config.name }));
      } catch (error) {
        throw new Error(`kubernetes: cluster ${config.name}: jwksFile ${path}: ${error instanceof Error ? error.message : String(error)}`);
      }
      // Setting jwksUri turns discovery off; the file source ignores the URL it is handed.
      jwksUri = pathToFileURL(path).href;
    }
    const verifier = new JwtVerifier(
      {
        issuers: [
          {
            issuer: config.issuer,
            ...(jwksUri ? { jwksUri } : {}),
            allowedAudiences: config.allowedAudiences,
            algorithms: config.algorithms,
            clockSkewSeconds: config.clockSkewSeconds,
            maxTokenLifetimeSeconds: config.maxTokenLifetimeSeconds,
            attributes: {},
          },
        ],
      },
      // One verifier per cluster, each with its own key source: no key set ever serves two issuers.
      { jwks: file ?? deps.jwks, http: deps.http },
    );
    const [warmed] = await verifier.warm();
    if (!warmed?.ok) deps.log.warn({ plugin: 'kubernetes', cluster: config.name, reason: warmed?.reason }, 'cluster keys not reachable at startup; will retry on first token');
    return new OfflineCluster(config, verifier, file);
  }

  async validate(token: string, ctx: ValidationContext): Promise<VerifiedIdentity> {
    const { identity, payload } = await this.verifier.verify(token, ctx);
    const account = projectedServiceAccount(payload);
    return { ...identity, attributes: serviceAccountAttributes(this.config.name, account) };
  }

  close(): void {
    this.file?.close();
  }
}
