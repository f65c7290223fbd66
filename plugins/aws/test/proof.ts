import { randomUUID } from 'node:crypto';
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import type { SignedRequestEnvelope } from '../src/index.js';
import type { AwsCredentials } from './moto.js';

export const GET_CALLER_IDENTITY = 'Action=GetCallerIdentity&Version=2011-06-15';

export interface ProofOptions {
  readonly credentials: AwsCredentials;
  /** STS endpoint origin, e.g. `https://sts.amazonaws.com`. */
  readonly endpoint: string;
  readonly region?: string;
  /** Value of the audience header: the broker's issuer. */
  readonly audience?: string;
  readonly audienceHeader?: string;
  readonly signingDate?: Date;
  readonly body?: string;
  /** Extra headers to sign. */
  readonly headers?: Record<string, string>;
}

/** Signs GetCallerIdentity exactly as a workload does (the README's client code), returning the envelope. */
export async function signEnvelope(options: ProofOptions): Promise<SignedRequestEnvelope & { headers: Record<string, string> }> {
  const url = new URL(options.endpoint);
  const body = options.body ?? GET_CALLER_IDENTITY;
  const headers: Record<string, string> = {
    host: url.host,
    'content-type': 'application/x-www-form-urlencoded; charset=utf-8',
    // As the AWS SDK does: a signed per-call id, so two proofs signed in the same second still differ.
    'amz-sdk-invocation-id': randomUUID(),
    ...options.headers,
  };
  if (options.audience !== undefined) headers[options.audienceHeader ?? 'x-tessera-audience'] = options.audience;
  const request = new HttpRequest({ method: 'POST', protocol: url.protocol, hostname: url.hostname, port: url.port ? Number(url.port) : undefined, path: '/', headers, body });
  const signer = new SignatureV4({ credentials: options.credentials, region: options.region ?? 'us-east-1', service: 'sts', sha256: Sha256 });
  const signed = await signer.sign(request, options.signingDate ? { signingDate: options.signingDate } : {});
  return { method: 'POST', url: `${url.origin}/`, headers: { ...signed.headers }, body };
}

export function encodeEnvelope(envelope: unknown): string {
  return Buffer.from(JSON.stringify(envelope)).toString('base64url');
}

export async function signProof(options: ProofOptions): Promise<string> {
  return encodeEnvelope(await signEnvelope(options));
}

/** The envelope inside a proof, for tests that alter one part of it. */
export function decodeProof(token: string): SignedRequestEnvelope & { headers: Record<string, string> } {
  return JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as SignedRequestEnvelope & { headers: Record<string, string> };
}

/** Flips one hex digit in the middle of the SigV4 signature: the request is otherwise intact. */
export function tamperSignature(token: string): string {
  const envelope = decodeProof(token);
  envelope.headers.authorization = envelope.headers.authorization!.replace(/Signature=([0-9a-f]{64})$/, (_all, signature: string) => {
    const index = 32;
    const flipped = signature[index] === '0' ? '1' : '0';
    return `Signature=${signature.slice(0, index)}${flipped}${signature.slice(index + 1)}`;
  });
  return encodeEnvelope(envelope);
}
