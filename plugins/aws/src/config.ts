import { z } from 'zod';
import type { TokenTypeUrn } from '@tessera/plugin-sdk';

/** Tessera's token type for a signed `sts:GetCallerIdentity` request (AWS defines no token type URN). */
export const TOKEN_TYPE_AWS_STS = 'urn:tessera:token-type:aws-sts' satisfies TokenTypeUrn;
/** The same proof under the name Starfly clients send. */
export const TOKEN_TYPE_STARFLY_AWS_STS = 'urn:starfly:token-type:aws-sts' satisfies TokenTypeUrn;

/** Header the workload signs to bind its proof to this broker (Vault's `X-Vault-AWS-IAM-Server-ID`). */
export const DEFAULT_AUDIENCE_HEADER = 'x-tessera-audience';

/** Where SigV4 signs for the global endpoint `https://sts.amazonaws.com`. */
const GLOBAL_ENDPOINT_REGION = 'us-east-1';

const REGION = /^[a-z]{2}(-[a-z]+)+-\d{1,2}$/;
const PARTITION = /^aws(-[a-z]+)*$/;
const ACCOUNT = /^\d{12}$/;
// RFC 9110 §5.6.2 token, lower case: header names are compared case-insensitively.
const HEADER_NAME = /^[a-z0-9!#$%&'*+.^_`|~-]+$/;
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);
/** Headers with a fixed meaning in the signed request: the audience header cannot be one of them. */
const RESERVED_HEADERS = /^(authorization|host|content-[a-z-]+|x-amz-.*|connection|transfer-encoding|user-agent)$/;
// IAM role names: [\w+=,.@-]{1,64}; a pattern may use `*` for any run of those characters.
const ROLE_ARN_PATTERN = /^arn:(aws(-[a-z]+)*|\*):iam::(\d{12}|\*):role\/[\w+=,.@*-]{1,64}$/;

const endpointSchema = z
  .object({
    url: z
      .string()
      .describe('Origin of an STS endpoint (FIPS, VPC endpoint, test): https://host[:port]; plain http only to a loopback host'),
    region: z.string().regex(REGION, 'must be an AWS region such as us-east-1').describe('Region the workload signs for (SigV4 credential scope)'),
    partition: z.string().regex(PARTITION, 'must be an AWS partition such as aws').default('aws').describe('Partition of the ARNs this endpoint answers with'),
  })
  .strict()
  .superRefine((endpoint, ctx) => {
    const origin = endpointOrigin(endpoint.url);
    if (origin === undefined) ctx.addIssue({ code: 'custom', path: ['url'], message: 'must be https://host[:port] (http only to 127.0.0.1, [::1] or localhost), without path, query or credentials' });
  });

/** The plugin's config block (`plugins[].config`); also published in the broker's JSON Schema. */
export const awsConfigSchema = z
  .object({
    accounts: z
      .array(z.string().regex(ACCOUNT, 'must be a 12-digit AWS account id'))
      .min(1)
      .describe('AWS accounts whose principals may present proofs. Required: anyone can create an AWS account and sign a valid request'),
    roleArns: z
      .array(
        z
          .string()
          .regex(
            ROLE_ARN_PATTERN,
            'must be arn:<partition>:iam::<account>:role/<name>, `*` allowed; no role path: STS assumed-role ARNs do not carry it, so a pattern with a path would never match',
          ),
      )
      .min(1)
      .optional()
      .describe('Role ARN patterns (`*` = any run of role-name characters). Default: any role of `accounts`'),
    allowIamUsers: z
      .boolean()
      .default(false)
      .describe('Also accept IAM users (long-lived access keys). Roles are what workloads should use; account root is never accepted'),
    globalEndpoint: z.boolean().default(true).describe('Accept proofs for https://sts.amazonaws.com (signed for us-east-1)'),
    regions: z
      .array(z.string().regex(REGION, 'must be an AWS region such as eu-west-1'))
      .default([])
      .describe('Accept proofs for the regional endpoints https://sts.<region>.amazonaws.com (.com.cn for China regions)'),
    endpoints: z.array(endpointSchema).default([]).describe('Further STS endpoints, named exactly; never taken from the proof itself'),
    audienceHeader: z
      .string()
      .regex(HEADER_NAME, 'must be a lower-case HTTP header name')
      .refine((name) => !RESERVED_HEADERS.test(name), 'must not be a header SigV4 or HTTP already gives a meaning')
      .default(DEFAULT_AUDIENCE_HEADER)
      .describe('Signed header whose value must name this broker (its issuer or token endpoint)'),
    allowedAudiences: z.array(z.string().min(1)).default([]).describe('Audience header values accepted besides the broker issuer and token endpoint'),
    maxAgeSeconds: z
      .number()
      .int()
      .min(30)
      .max(900)
      .default(300)
      .describe('How long after its X-Amz-Date a proof is accepted; AWS itself accepts signed requests for about 15 minutes'),
    clockSkewSeconds: z.number().int().min(0).max(300).default(60).describe('Tolerance for an X-Amz-Date in the future'),
    singleUse: z
      .boolean()
      .default(true)
      .describe('Accept each proof once (per replay store): a leaked proof cannot be presented again inside its window'),
    timeoutMs: z.number().int().min(100).max(30_000).default(5_000).describe('Upper bound for the STS call; the validation budget may end it sooner'),
    maxTokenBytes: z.number().int().min(1_024).max(65_536).default(16_384).describe('Largest subject token accepted (session tokens are the bulk of it)'),
    tokenTypes: z
      .array(z.string().regex(/^urn:\S+$/, 'must be a urn:'))
      .min(1)
      .default([TOKEN_TYPE_AWS_STS, TOKEN_TYPE_STARFLY_AWS_STS])
      .describe('Token type URNs this validator answers for'),
  })
  .strict()
  .refine((config) => config.globalEndpoint || config.regions.length > 0 || config.endpoints.length > 0, {
    message: 'no STS endpoint left: enable globalEndpoint, or list regions or endpoints',
    path: ['globalEndpoint'],
  });

/** The parsed config, defaults applied. */
export type AwsConfig = z.output<typeof awsConfigSchema>;

/** An STS endpoint a proof may be addressed to, and the only place the broker will send it. */
export interface StsEndpoint {
  /** `scheme://host[:port]`, as WHATWG URL serialises it (default port omitted). */
  readonly origin: string;
  /** The `Host` the workload signed: `host[:port]`. */
  readonly host: string;
  readonly region: string;
  readonly partition: string;
}

/** All endpoints the config allows, keyed by origin. */
export function allowedEndpoints(config: AwsConfig): ReadonlyMap<string, StsEndpoint> {
  const endpoints = new Map<string, StsEndpoint>();
  const add = (url: string, region: string, partition: string) => {
    const origin = endpointOrigin(url);
    if (origin === undefined) throw new TypeError('invalid STS endpoint');
    endpoints.set(origin, { origin, host: new URL(origin).host, region, partition });
  };
  if (config.globalEndpoint) add('https://sts.amazonaws.com', GLOBAL_ENDPOINT_REGION, 'aws');
  for (const region of config.regions) {
    const partition = regionPartition(region);
    add(`https://sts.${region}.amazonaws.com${partition === 'aws-cn' ? '.cn' : ''}`, region, partition);
  }
  for (const endpoint of config.endpoints) add(endpoint.url, endpoint.region, endpoint.partition);
  return endpoints;
}

function regionPartition(region: string): string {
  if (region.startsWith('cn-')) return 'aws-cn';
  if (region.startsWith('us-gov-')) return 'aws-us-gov';
  return 'aws';
}

/** The origin of a configured endpoint URL, or undefined if it is not one we will send proofs to. */
function endpointOrigin(raw: string): string | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return undefined;
  }
  if (url.username || url.password || url.search || url.hash || (url.pathname !== '/' && url.pathname !== '')) return undefined;
  if (raw.includes('?') || raw.includes('#')) return undefined;
  // Plain HTTP would let anyone on the path read the proof and forge STS's answer: loopback tests only.
  if (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname)) return url.origin;
  return url.protocol === 'https:' ? url.origin : undefined;
}
