import { randomUUID } from 'node:crypto';
import { Sha256 } from '@aws-crypto/sha256-js';
import { defaultProvider } from '@aws-sdk/credential-provider-node';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import type { SourceOptions } from './sources.js';

/** Signed together with the request, so a proof made for this broker is useless anywhere else. */
export const AUDIENCE_HEADER = 'x-tessera-audience';
const BODY = 'Action=GetCallerIdentity&Version=2011-06-15';

/**
 * The AWS proof of identity (the pattern of Vault's IAM auth): a SigV4-signed `sts:GetCallerIdentity`
 * request the broker forwards to STS, with the broker's issuer in a signed header. Credentials come from
 * the SDK's default provider chain (environment, profile, web identity, container and instance roles).
 * The subject token is base64url(JSON { method, url, headers, body }).
 */
export async function signedCallerIdentityRequest(options: SourceOptions): Promise<{ token: string }> {
  const region = options.awsRegion ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION;
  // China regions live in their own partition and domain.
  const domain = region?.startsWith('cn-') ? 'amazonaws.com.cn' : 'amazonaws.com';
  const endpoint = new URL(options.awsStsEndpoint ?? (region ? `https://sts.${region}.${domain}/` : 'https://sts.amazonaws.com/'));
  const request = new HttpRequest({
    method: 'POST',
    protocol: endpoint.protocol,
    hostname: endpoint.hostname,
    ...(endpoint.port ? { port: Number(endpoint.port) } : {}),
    path: endpoint.pathname,
    headers: {
      host: endpoint.host,
      // The broker accepts each proof once; a random signed header keeps two proofs made in the same second apart.
      'amz-sdk-invocation-id': randomUUID(),
      'content-type': 'application/x-www-form-urlencoded; charset=utf-8',
      [AUDIENCE_HEADER]: options.audience,
    },
    body: BODY,
  });
  // The global endpoint signs for us-east-1.
  const signer = new SignatureV4({ credentials: defaultProvider(), region: region ?? 'us-east-1', service: 'sts', sha256: Sha256 });
  const signed = await signer.sign(request);
  const envelope = { method: 'POST', url: endpoint.href, headers: signed.headers, body: BODY };
  return { token: Buffer.from(JSON.stringify(envelope)).toString('base64url') };
}
