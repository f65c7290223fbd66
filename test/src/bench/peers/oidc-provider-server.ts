/**
 * The oidc-provider peer's server process: a production-configured oidc-provider (NODE_ENV=production,
 * no dev interactions, static keys, no debug output) whose token endpoint does client_credentials and an
 * RFC 8693 token exchange registered through `provider.registerGrantType`. Configuration comes from
 * OIDC_PROVIDER_BENCH_CONFIG (JSON, see `ServerConfig`); prints `{"url": …}` on stdout once listening.
 */
import { createServer, type RequestListener } from 'node:http';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet, type JWK } from 'jose';

export interface ServerConfig {
  /** The provider's ES256 private signing JWK. */
  readonly signingKey: JWK;
  /** bench-client's public JWKS (private_key_jwt). */
  readonly clientJwks: JSONWebKeySet;
  /** The external IdP's public JWKS, which signs the subject tokens. */
  readonly idpJwks: JSONWebKeySet;
  readonly idpIssuer: string;
  /** 0 (or absent) for a free port. */
  readonly port?: number;
}

const CONFIG_ENV = 'OIDC_PROVIDER_BENCH_CONFIG';
const API = 'https://api.example.test';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const SUBJECT_TOKEN_TYPES = new Set(['urn:ietf:params:oauth:token-type:id_token', 'urn:ietf:params:oauth:token-type:jwt']);

/** The slice of oidc-provider's API used here; the package ships no type declarations. */
interface OidcContext {
  oidc: {
    params: Record<string, string | string[] | undefined>;
    client: { clientId: string };
    provider: ProviderInstance;
    entity(kind: string, value: unknown): void;
  };
  body: unknown;
}
interface ResourceServerInfo {
  scope: string;
  audience: string;
  accessTokenFormat: 'jwt';
  jwt: { sign: { alg: 'ES256' } };
  accessTokenTTL: number;
}
interface ResourceServerInstance {
  audience: string;
  scopes: Set<string>;
}
interface ClientCredentialsToken {
  resourceServer?: ResourceServerInstance;
  scope?: string;
  readonly expiration: number;
  readonly tokenType: string;
  save(): Promise<string>;
}
interface ProviderInstance {
  ClientCredentials: new (init: { client: unknown; scope?: string | undefined }) => ClientCredentialsToken;
  ResourceServer: new (identifier: string, info: ResourceServerInfo) => ResourceServerInstance;
  registerGrantType(name: string, handler: (ctx: OidcContext) => Promise<void>, params: readonly string[]): void;
  callback(): RequestListener;
}
type ErrorClass = new (description?: string) => Error;
interface OidcModule {
  Provider: new (issuer: string, configuration: Record<string, unknown>) => ProviderInstance;
  errors: { InvalidRequest: ErrorClass; InvalidTarget: ErrorClass };
}

async function main(): Promise<void> {
  const config = JSON.parse(process.env[CONFIG_ENV] ?? process.argv[2] ?? '') as ServerConfig;
  // A non-literal specifier: oidc-provider has no type declarations, `OidcModule` describes what is used.
  const specifier: string = 'oidc-provider';
  const { Provider, errors } = (await import(specifier)) as OidcModule;

  const server = createServer();
  await new Promise<void>((done) => server.listen(config.port ?? 0, '127.0.0.1', done));
  const issuer = `http://127.0.0.1:${(server.address() as { port: number }).port}`;

  const resourceServerInfo = (): ResourceServerInfo => ({
    scope: 'read',
    audience: API,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'ES256' } },
    accessTokenTTL: 600,
  });
  const defaultResource = async (_ctx: unknown, _client: unknown, oneOf?: string[]) => oneOf ?? API;
  const getResourceServerInfo = async (_ctx: unknown, resource: string) => {
    if (resource !== API) throw new errors.InvalidTarget();
    return resourceServerInfo();
  };
  // ClientCredentials tokens carry no accountId, so their JWT `sub` is the client; the exchange's subject is
  // put in through the documented JWT customizer, keyed by the token instance it was issued for.
  const exchangedSubjects = new WeakMap<object, string>();

  const provider = new Provider(issuer, {
    jwks: { keys: [config.signingKey] },
    clients: [
      {
        client_id: 'bench-client',
        token_endpoint_auth_method: 'private_key_jwt',
        token_endpoint_auth_signing_alg: 'ES256',
        jwks: config.clientJwks,
        grant_types: ['client_credentials', TOKEN_EXCHANGE],
        response_types: [],
        redirect_uris: [],
      },
    ],
    clientAuthMethods: ['private_key_jwt'],
    // Only an ES256 key is configured; keep every default that signs on ES256 so nothing asks for RS256.
    clientDefaults: { id_token_signed_response_alg: 'ES256' },
    enabledJWA: { idTokenSigningAlgValues: ['ES256'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: { enabled: true, defaultResource, getResourceServerInfo, useGrantedResource: async () => false },
    },
    // Set explicitly (same value as the default) so the default's one-time "SHOULD change" notice never prints.
    ttl: { ClientCredentials: (_ctx: unknown, token: ClientCredentialsToken & { resourceServer?: { accessTokenTTL?: number } }) => token.resourceServer?.accessTokenTTL ?? 600 },
    formats: {
      customizers: {
        jwt: async (_ctx: unknown, token: object, jwt: { payload: Record<string, unknown> }) => {
          const subject = exchangedSubjects.get(token);
          if (subject !== undefined) jwt.payload.sub = subject;
        },
      },
    },
  });

  const idpKeys = createLocalJWKSet(config.idpJwks);

  // Mirrors lib/actions/grants/client_credentials.js: resolve the one resource server (defaultResource when
  // none is asked for), keep the requested scopes it offers, issue a ClientCredentials token and save it.
  provider.registerGrantType(
    TOKEN_EXCHANGE,
    async (ctx) => {
      const { params, client } = ctx.oidc;
      const subjectToken = params.subject_token;
      if (typeof subjectToken !== 'string' || !subjectToken) throw new errors.InvalidRequest('missing subject_token');
      if (typeof params.subject_token_type !== 'string' || !SUBJECT_TOKEN_TYPES.has(params.subject_token_type)) {
        throw new errors.InvalidRequest('unsupported subject_token_type');
      }
      let subject: string;
      try {
        const { payload } = await jwtVerify(subjectToken, idpKeys, { algorithms: ['ES256'], issuer: config.idpIssuer, audience: issuer, requiredClaims: ['exp'] });
        if (typeof payload.sub !== 'string' || !payload.sub) throw new Error('no sub');
        subject = payload.sub;
      } catch {
        throw new errors.InvalidRequest('invalid subject_token');
      }

      const resource = params.resource ?? (await defaultResource(ctx, client));
      if (Array.isArray(resource) || typeof resource !== 'string') throw new errors.InvalidTarget('only a single resource indicator value is supported for this grant type');
      const resourceServer = new provider.ResourceServer(resource, await getResourceServerInfo(ctx, resource));
      if (params.audience !== undefined && params.audience !== resourceServer.audience) throw new errors.InvalidTarget('audience does not match the resource');

      const requested = typeof params.scope === 'string' ? params.scope.split(' ') : [];
      const token = new provider.ClientCredentials({ client });
      token.resourceServer = resourceServer;
      token.scope = requested.filter((scope) => resourceServer.scopes.has(scope)).join(' ') || undefined;
      exchangedSubjects.set(token, subject);

      ctx.oidc.entity('ClientCredentials', token);
      const accessToken = await token.save();
      ctx.body = {
        access_token: accessToken,
        issued_token_type: ACCESS_TOKEN_TYPE,
        token_type: token.tokenType,
        expires_in: token.expiration,
        ...(token.scope ? { scope: token.scope } : {}),
      };
    },
    ['subject_token', 'subject_token_type', 'audience', 'scope', 'resource'],
  );

  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ url: issuer })}\n`);
  // Nothing to flush (in-memory adapter): stop at once rather than wait on the bench's keep-alive sockets.
  process.once('SIGTERM', () => process.exit(0));
}

main().catch((error: unknown) => {
  process.stderr.write(`oidc-provider server failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
