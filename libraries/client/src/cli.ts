import { createHash, randomUUID } from 'node:crypto';
import { readFile, rename, stat, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { ExchangeError, TesseraClient, type ClientCredentials, type ExchangedToken } from './client.js';
import { SourceError, type SourceKind } from './sources.js';

export const EXCHANGE_USAGE = `tessera exchange --broker URL --from k8s|aws|gcp|azure|spiffe|oidc-file --audience A [options]

  --broker URL               the broker's issuer URL (also the audience of the workload's own token)
  --from SOURCE              where the workload's own token comes from
  --audience A               audience of the token wanted (repeatable)
  --scope S                  scope wanted (repeatable)
  --requested-token-type T   default: the broker's (an access token)
  --client-id ID             public client id (default tessera-client)
  --client-secret-file FILE  authenticate with client_secret_basic
  --spiffe-client-auth       with --from spiffe: the JWT-SVID is also the client credential
  --token-file FILE          k8s / oidc-file: the token file
  --subject-audience A       audience of the workload's own token, when not the broker URL (Azure app ID URI)
  --spiffe-endpoint ADDR     unix:///path or tcp://ip:port (default SPIFFE_ENDPOINT_SOCKET)
  --azure-client-id ID       user-assigned managed identity
  --aws-region REGION        STS region for the signed proof (default AWS_REGION, else global)
  --aws-sts-endpoint URL     an STS endpoint the broker accepts, instead of the regional or global one
  --cache FILE               reuse the token in FILE until 80 % of its life has passed; refresh it after
  --output token|json        print the token only (default) or the whole response
`;

export class ExchangeUsageError extends Error {}

const SOURCES: readonly SourceKind[] = ['k8s', 'aws', 'gcp', 'azure', 'spiffe', 'oidc-file'];

interface CacheFile {
  readonly key: string;
  readonly token: ExchangedToken;
  readonly refreshAt: number;
}

/** `tessera exchange`: prints (or caches) a token; errors name the side that failed. Returns the exit code. */
export async function runExchangeCommand(args: string[], out: (text: string) => void = (text) => void process.stdout.write(text)): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      broker: { type: 'string' },
      from: { type: 'string' },
      audience: { type: 'string', multiple: true },
      scope: { type: 'string', multiple: true },
      'requested-token-type': { type: 'string' },
      'client-id': { type: 'string' },
      'client-secret-file': { type: 'string' },
      'spiffe-client-auth': { type: 'boolean' },
      'token-file': { type: 'string' },
      'subject-audience': { type: 'string' },
      'spiffe-endpoint': { type: 'string' },
      'azure-client-id': { type: 'string' },
      'aws-region': { type: 'string' },
      'aws-sts-endpoint': { type: 'string' },
      cache: { type: 'string' },
      output: { type: 'string', default: 'token' },
    },
  });
  if (!values.broker || !URL.canParse(values.broker)) throw new ExchangeUsageError('--broker URL is required');
  const broker = new URL(values.broker);
  if (broker.protocol !== 'https:' && !(broker.protocol === 'http:' && ['localhost', '127.0.0.1', '[::1]'].includes(broker.hostname))) {
    throw new ExchangeUsageError('--broker must be https (http only on loopback)');
  }
  const from = values.from as SourceKind;
  if (!SOURCES.includes(from)) throw new ExchangeUsageError(`--from must be one of ${SOURCES.join(', ')}`);
  if (!values.audience || values.audience.length === 0) throw new ExchangeUsageError('--audience is required');
  if (values.output !== 'token' && values.output !== 'json') throw new ExchangeUsageError('--output must be token or json');
  if (values['spiffe-client-auth'] && from !== 'spiffe') throw new ExchangeUsageError('--spiffe-client-auth needs --from spiffe');

  let client: ClientCredentials;
  if (values['spiffe-client-auth']) client = { kind: 'spiffe-svid' };
  else if (values['client-secret-file']) {
    const secret = (await readFile(values['client-secret-file'], 'utf8')).replace(/\r?\n$/, '');
    client = { kind: 'secret', clientId: values['client-id'] ?? 'tessera-client', secret };
  } else client = { kind: 'public', clientId: values['client-id'] ?? 'tessera-client' };

  const request = {
    audience: values.audience,
    ...(values.scope ? { scope: values.scope } : {}),
    ...(values['requested-token-type'] ? { requestedTokenType: values['requested-token-type'] } : {}),
  };
  // Everything that decides whose token this is: two identities sharing a cache file never get each other's.
  const key = createHash('sha256')
    .update(JSON.stringify([values.broker, from, request, values['client-id'] ?? '', values['client-secret-file'] ?? '', values['spiffe-client-auth'] ?? false, values['token-file'] ?? '', values['subject-audience'] ?? '', values['spiffe-endpoint'] ?? '', values['azure-client-id'] ?? '', values['aws-region'] ?? '', values['aws-sts-endpoint'] ?? '']))
    .digest('hex');
  const cached = values.cache ? await readCache(values.cache, key) : undefined;
  let token = cached;
  if (!token) {
    const tessera = new TesseraClient({
      broker: values.broker,
      client,
      from,
      source: {
        ...(values['token-file'] ? { tokenFile: values['token-file'] } : {}),
        ...(values['subject-audience'] ? { audience: values['subject-audience'] } : {}),
        ...(values['spiffe-endpoint'] ? { spiffeEndpoint: values['spiffe-endpoint'] } : {}),
        ...(values['azure-client-id'] ? { azureClientId: values['azure-client-id'] } : {}),
        ...(values['aws-region'] ? { awsRegion: values['aws-region'] } : {}),
        ...(values['aws-sts-endpoint'] ? { awsStsEndpoint: values['aws-sts-endpoint'] } : {}),
      },
    });
    try {
      token = await tessera.exchange(request);
    } catch (error) {
      if (error instanceof SourceError || error instanceof ExchangeError) {
        process.stderr.write(`tessera exchange: ${error.message}\n`);
        return 1;
      }
      throw error;
    }
    if (values.cache) await writeCache(values.cache, { key, token, refreshAt: Date.now() + token.expires_in * 800 });
  }
  out(values.output === 'json' ? `${JSON.stringify(token)}\n` : `${token.access_token}\n`);
  return 0;
}

/** A cache entry is used only if it is ours: owned by this user, not readable by others, well formed. */
async function readCache(path: string, key: string): Promise<ExchangedToken | undefined> {
  try {
    const info = await stat(path);
    if ((process.getuid && info.uid !== process.getuid()) || (info.mode & 0o077) !== 0) return undefined;
    const cached = JSON.parse(await readFile(path, 'utf8')) as Partial<CacheFile>;
    const token = cached.token;
    if (cached.key !== key || typeof cached.refreshAt !== 'number' || Date.now() >= cached.refreshAt) return undefined;
    return token && typeof token.access_token === 'string' && typeof token.expires_in === 'number' ? token : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Written whole and owner-only: a fresh file (exclusive create, random name) renamed into place, so a
 * concurrent reader never sees half a token and a planted file or symlink cannot take the write.
 */
async function writeCache(path: string, entry: CacheFile): Promise<void> {
  const temporary = `${path}.${randomUUID()}.tmp`;
  await writeFile(temporary, JSON.stringify(entry), { mode: 0o600, flag: 'wx' });
  await rename(temporary, path);
}
