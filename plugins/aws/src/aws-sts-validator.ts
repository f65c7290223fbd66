import {
  acceptedUntil,
  InvalidToken,
  type IdentityAttributes,
  type ReplayStore,
  type SubjectValidator,
  type TokenTypeUrn,
  type ValidationContext,
  type VerifiedIdentity,
  type ValidationCaching,
} from '@tessera/plugin-sdk';
import { compileRoleArnPattern, parseCallerArn, type Principal } from './arn.js';
import { allowedEndpoints, type AwsConfig, type StsEndpoint } from './config.js';
import { checkProof } from './signed-request.js';
import { getCallerIdentity } from './sts-client.js';

export interface AwsStsValidatorDeps {
  readonly replay: ReplayStore;
}

/**
 * Verifies a signed `sts:GetCallerIdentity` request (the Vault IAM-auth pattern): checks everything it
 * can locally, sends the request unchanged to the allow-listed STS endpoint it was signed for, and turns
 * STS's answer into an identity. STS, not the broker, verifies the SigV4 signature.
 */
export class AwsStsValidator implements SubjectValidator {
  readonly tokenTypes: readonly TokenTypeUrn[];
  readonly clockSkewSeconds: number;
  /** Reuse of STS's answer for a repeated proof, unless each proof may be used once (`singleUse`). */
  readonly caching: ValidationCaching | undefined;
  readonly #config: AwsConfig;
  readonly #endpoints: ReadonlyMap<string, StsEndpoint>;
  readonly #accounts: ReadonlySet<string>;
  readonly #roleMatchers: readonly ((roleArn: string) => boolean)[] | undefined;

  constructor(
    config: AwsConfig,
    private readonly deps: AwsStsValidatorDeps,
  ) {
    this.tokenTypes = config.tokenTypes as TokenTypeUrn[];
    this.clockSkewSeconds = config.clockSkewSeconds;
    this.caching = config.singleUse ? undefined : {};
    this.#config = config;
    this.#endpoints = allowedEndpoints(config);
    this.#accounts = new Set(config.accounts);
    this.#roleMatchers = config.roleArns?.map(compileRoleArnPattern);
  }

  async validate(token: string, ctx: ValidationContext): Promise<VerifiedIdentity> {
    const config = this.#config;
    const audiences = new Set([ctx.brokerIssuer, ctx.tokenEndpoint, ...(ctx.brokerAudienceOnly ? [] : config.allowedAudiences)]);
    const proof = checkProof(token, {
      endpoints: this.#endpoints,
      audienceHeader: config.audienceHeader,
      audiences,
      maxAgeSeconds: config.maxAgeSeconds,
      clockSkewSeconds: config.clockSkewSeconds,
      maxTokenBytes: config.maxTokenBytes,
      now: ctx.now,
    });

    const caller = await getCallerIdentity(proof, { signal: ctx.signal, timeoutMs: config.timeoutMs });
    const principal = this.#principal(caller.arn, caller.account, proof.endpoint);

    const expiresAt = new Date(proof.signedAt.getTime() + config.maxAgeSeconds * 1000);
    // Recorded only once STS vouched for the proof, so forged proofs cannot fill the store; remembered for
    // as long as this validator (and core, with the skew it declares) would accept the proof again.
    if (config.singleUse && !(await this.deps.replay.consume(`aws-sts:${proof.signature}`, acceptedUntil(expiresAt, this.clockSkewSeconds)))) {
      throw new InvalidToken('claims', 'proof already used');
    }

    const principalId = caller.userId.split(':')[0] ?? caller.userId;
    const attributes: Record<string, string> = {
      'aws.partition': principal.partition,
      'aws.account': principal.account,
      'aws.arn': caller.arn,
      'aws.userId': caller.userId,
      'aws.principalId': principalId,
      'aws.principalType': principal.kind,
      'aws.region': proof.endpoint.region,
    };
    let subject: string;
    if (principal.kind === 'assumed-role') {
      subject = principal.roleArn;
      attributes['aws.roleArn'] = principal.roleArn;
      attributes['aws.roleName'] = principal.roleName;
      attributes['aws.sessionName'] = principal.sessionName;
    } else {
      subject = principal.userArn;
      attributes['aws.userName'] = principal.userName;
    }
    return {
      issuer: `aws-sts:${principal.partition}`,
      subject,
      audiences: [proof.audience],
      expiresAt,
      tokenType: ctx.tokenType,
      claims: { account: caller.account, arn: caller.arn, userId: caller.userId, stsEndpoint: proof.endpoint.origin, signedAt: proof.signedAt.toISOString() },
      attributes: attributes satisfies IdentityAttributes,
    };
  }

  /** The caller as policy may see it, if the config trusts its account and kind. */
  #principal(arn: string, account: string, endpoint: StsEndpoint): Principal {
    const parsed = parseCallerArn(arn);
    // STS answered from an allow-listed endpoint, so a mismatch here is an upstream fault; refuse anyway.
    if (parsed === undefined) throw new InvalidToken('claims', 'caller ARN not understood');
    if (parsed.kind === 'unsupported') throw new InvalidToken('claims', `principal type ${parsed.type} not accepted`);
    if (parsed.account !== account) throw new InvalidToken('claims', 'caller ARN and account disagree');
    if (parsed.partition !== endpoint.partition) throw new InvalidToken('claims', 'caller partition does not match the endpoint');
    if (!this.#accounts.has(parsed.account)) throw new InvalidToken('untrusted_issuer', 'account not allowed');
    if (parsed.kind === 'user') {
      if (!this.#config.allowIamUsers) throw new InvalidToken('claims', 'IAM users not accepted');
      return parsed;
    }
    if (this.#roleMatchers && !this.#roleMatchers.some((matches) => matches(parsed.roleArn))) throw new InvalidToken('claims', 'role not allowed');
    return parsed;
  }
}
