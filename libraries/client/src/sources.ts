import { readFile } from 'node:fs/promises';
import { decodeJwt } from 'jose';
import { WorkloadApiClient } from '@tessera/spiffe';

/** Where a workload's own credential comes from. */
export type SourceKind = 'k8s' | 'aws' | 'gcp' | 'azure' | 'spiffe' | 'oidc-file';

/** A token the workload already holds, ready to be a `subject_token`. */
export interface SubjectToken {
  readonly token: string;
  readonly tokenType: string;
  /** When known: refresh before this. */
  readonly expiresAt?: Date;
}

/** The workload side could not get its own credential: says which provider and what was missing. */
export class SourceError extends Error {
  override readonly name = 'SourceError';
  constructor(
    readonly source: SourceKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${source}: ${message}`, options);
  }
}

export interface SourceOptions {
  /** The audience the workload's own token must name: the broker's issuer, as its validators require. */
  readonly audience: string;
  readonly signal?: AbortSignal;
  /** k8s / oidc-file: the token file. */
  readonly tokenFile?: string;
  /** spiffe: Workload API address (default SPIFFE_ENDPOINT_SOCKET). */
  readonly spiffeEndpoint?: string;
  /** azure: client id of a user-assigned managed identity. */
  readonly azureClientId?: string;
  /** aws: STS region for the signed request (default AWS_REGION, else the global endpoint). */
  readonly awsRegion?: string;
  /** aws: an STS endpoint the broker is configured to accept, instead of the regional or global one. */
  readonly awsStsEndpoint?: string;
}

export const TOKEN_TYPES: Readonly<Record<SourceKind, string>> = {
  k8s: 'urn:tessera:token-type:kubernetes-sa',
  aws: 'urn:tessera:token-type:aws-sts',
  gcp: 'urn:tessera:token-type:gcp-id-token',
  azure: 'urn:tessera:token-type:azure-mi',
  spiffe: 'urn:tessera:token-type:jwt-svid',
  'oidc-file': 'urn:ietf:params:oauth:token-type:jwt',
};

/**
 * The projected token mounted for the broker's audience. Never the default service-account mount: that
 * token is for the API server, and sending it to the broker would hand a cluster credential to it and
 * to every proxy on the way, only to be refused.
 */
const K8S_TOKEN_FILES = ['/var/run/secrets/tokens/tessera'];

export async function obtainSubjectToken(kind: SourceKind, options: SourceOptions): Promise<SubjectToken> {
  switch (kind) {
    case 'k8s':
    case 'oidc-file':
      return fromFile(kind, options);
    case 'spiffe':
      return fromWorkloadApi(options);
    case 'gcp':
      return fromGoogle(options);
    case 'azure':
      return fromAzure(options);
    case 'aws':
      return fromAws(options);
  }
}

async function fromFile(kind: 'k8s' | 'oidc-file', options: SourceOptions): Promise<SubjectToken> {
  const candidates = options.tokenFile ? [options.tokenFile] : kind === 'k8s' ? K8S_TOKEN_FILES : [];
  if (candidates.length === 0) throw new SourceError(kind, 'no token file given (--token-file)');
  for (const path of candidates) {
    let token: string;
    try {
      token = (await readFile(path, 'utf8')).trim();
    } catch {
      continue;
    }
    return { token, tokenType: TOKEN_TYPES[kind], ...expiryOf(token) };
  }
  throw new SourceError(kind, `cannot read a token from ${candidates.join(' or ')}${kind === 'k8s' ? ' (mount a projected serviceAccountToken with the broker as audience there, or pass --token-file)' : ''}`);
}

async function fromWorkloadApi(options: SourceOptions): Promise<SubjectToken> {
  let client: WorkloadApiClient;
  try {
    client = new WorkloadApiClient(options.spiffeEndpoint);
  } catch (cause) {
    throw new SourceError('spiffe', 'no Workload API address (set SPIFFE_ENDPOINT_SOCKET or --spiffe-endpoint)', { cause });
  }
  try {
    const [svid] = await client.fetchJwtSvid({ audience: [options.audience], ...(options.signal ? { signal: options.signal } : {}) });
    if (!svid) throw new SourceError('spiffe', 'the Workload API returned no JWT-SVID');
    return { token: svid.token, tokenType: TOKEN_TYPES.spiffe, expiresAt: svid.expiresAt };
  } catch (cause) {
    if (cause instanceof SourceError) throw cause;
    throw new SourceError('spiffe', `cannot fetch a JWT-SVID from the Workload API (${(cause as Error).message})`, { cause });
  } finally {
    client.close();
  }
}

async function fromGoogle(options: SourceOptions): Promise<SubjectToken> {
  try {
    const { GoogleAuth } = await import('google-auth-library');
    // The metadata server (format=full) on GCP, or a service-account key via GOOGLE_APPLICATION_CREDENTIALS.
    const client = await new GoogleAuth().getIdTokenClient(options.audience);
    const token = await client.idTokenProvider.fetchIdToken(options.audience);
    return { token, tokenType: TOKEN_TYPES.gcp, ...expiryOf(token) };
  } catch (cause) {
    throw new SourceError('gcp', `cannot get an ID token from the metadata server or GOOGLE_APPLICATION_CREDENTIALS (${(cause as Error).message})`, { cause });
  }
}

async function fromAzure(options: SourceOptions): Promise<SubjectToken> {
  try {
    const { ManagedIdentityCredential } = await import('@azure/identity');
    const credential = options.azureClientId ? new ManagedIdentityCredential({ clientId: options.azureClientId }) : new ManagedIdentityCredential();
    // The broker's application ID URI is the resource; `/.default` asks for the app's configured permissions.
    const scope = `${options.audience.replace(/\/$/, '')}/.default`;
    const accessToken = await credential.getToken(scope, options.signal ? { abortSignal: options.signal } : {});
    return { token: accessToken.token, tokenType: TOKEN_TYPES.azure, expiresAt: new Date(accessToken.expiresOnTimestamp) };
  } catch (cause) {
    throw new SourceError('azure', `cannot get a managed identity token (${(cause as Error).message})`, { cause });
  }
}

async function fromAws(options: SourceOptions): Promise<SubjectToken> {
  const { signedCallerIdentityRequest } = await import('./aws-proof.js');
  try {
    return { ...(await signedCallerIdentityRequest(options)), tokenType: TOKEN_TYPES.aws };
  } catch (cause) {
    throw new SourceError('aws', `cannot sign a GetCallerIdentity request (${(cause as Error).message})`, { cause });
  }
}

function expiryOf(token: string): { expiresAt?: Date } {
  try {
    const { exp } = decodeJwt(token);
    return typeof exp === 'number' ? { expiresAt: new Date(exp * 1000) } : {};
  } catch {
    return {};
  }
}
