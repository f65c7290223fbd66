import { z } from 'zod';
import { adminConfigSchema } from './admin-schema.js';
import { auditConfigSchema } from './audit-schema.js';
import { IN_FLIGHT_DEFAULTS, inFlightSchema, rateLimitSchema, VERIFIED_TOKEN_DEFAULTS, verifiedTokensSchema } from './limits-schema.js';
import { storeConfigSchema } from './store-schema.js';
import { tracingConfigSchema } from './tracing-schema.js';

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])$/;

/** An absolute https URL; http only for loopback hosts (development and tests). */
const publicUrl = z.string().superRefine((value, ctx) => {
  if (!URL.canParse(value)) return void ctx.addIssue({ code: 'custom', message: 'must be an absolute URL' });
  const url = new URL(value);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK.test(url.hostname))) {
    ctx.addIssue({ code: 'custom', message: 'must be https (http only for loopback)' });
  }
  if (url.search || url.hash || url.username || url.password) {
    ctx.addIssue({ code: 'custom', message: 'must have no query, fragment or credentials' });
  }
});

const tokenTypeUrn = z.string().regex(/^urn:\S+$/, 'must be a urn:');

/** Route path under the issuer's path. */
const endpointPath = z.string().regex(/^(\/[A-Za-z0-9._~-]+)+$/, 'must be a path such as /v1/exchange/token');

/** Short grant type names used in config, mapped to RFC grant type URIs by the token endpoint. */
export const GRANT_TYPE_NAMES = ['token_exchange', 'jwt_bearer', 'client_credentials'] as const;
export type GrantTypeName = (typeof GRANT_TYPE_NAMES)[number];

export const SIGNING_ALGORITHMS = ['ES256', 'ES384', 'EdDSA', 'RS256', 'PS256'] as const;
export const KEY_USES = ['sign', 'publish'] as const;
/** Relying parties commonly cache a JWKS for 5 minutes: a new key is published that long before it signs. */
export const DEFAULT_PUBLISH_AHEAD_SECONDS = 300;
const ASSERTION_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;

const jwksSchema = z.object({ keys: z.array(z.record(z.string(), z.unknown())).min(1) }).describe('Inline JWK Set (public keys)');

const secretHash = z
  .string()
  .regex(/^\$scrypt\$/, 'must be a scrypt hash made by `tessera secret hash`')
  // Marked so tooling that prints a resolved config can redact it.
  .meta({ secret: true })
  .describe('scrypt hash of the client secret (never the secret itself)');

const clientAuthSchema = z.discriminatedUnion('method', [
  z
    .object({
      method: z.literal('private_key_jwt'),
      jwks: jwksSchema.optional(),
      jwksUri: publicUrl.optional().describe('Where the client publishes its keys'),
      algorithms: z.array(z.enum(ASSERTION_ALGORITHMS)).min(1).optional().describe('Allowed assertion algorithms (default: clientAuth.algorithms)'),
    })
    .strict()
    .refine((auth) => (auth.jwks === undefined) !== (auth.jwksUri === undefined), 'exactly one of jwks or jwksUri is required'),
  z.object({ method: z.literal('client_secret_basic'), secretHash }).strict(),
  z.object({ method: z.literal('client_secret_post'), secretHash }).strict(),
  z.object({ method: z.literal('none') }).strict().describe('Public client: identified by client_id only. Use only where the network already authenticates callers'),
  z
    .object({ method: z.literal('spiffe_jwt') })
    .strict()
    .describe('Workloads authenticating with a JWT-SVID (client_assertion_type jwt-spiffe); the id is a SPIFFE ID pattern, the client is the SPIFFE ID'),
]);

const clientSchema = z
  .object({
    id: z.string().min(1).max(256),
    description: z.string().optional(),
    auth: clientAuthSchema,
    grantTypes: z.array(z.enum(GRANT_TYPE_NAMES)).min(1).default(['token_exchange']).describe('Grant types this client may use'),
    rateLimit: rateLimitSchema.optional().describe('Token requests this client may make per window (default: limits.perClient); for a spiffe_jwt pattern, each SPIFFE ID it matches has its own count'),
  })
  .strict()
  // One meaning per id: SPIFFE ID patterns name workload clients, anything else a registered client.
  .refine((client) => (client.auth.method === 'spiffe_jwt') === client.id.startsWith('spiffe://'), {
    message: 'spiffe_jwt clients have a spiffe:// id pattern, and only they do',
    path: ['id'],
  })
  // The trust domain is written out: a wildcard there (spiffe://example.org** or spiffe://*/x) would
  // reach other, possibly federated, trust domains.
  .refine((client) => client.auth.method !== 'spiffe_jwt' || /^spiffe:\/\/[a-z0-9._-]+(\/|$)/.test(client.id), {
    message: 'a spiffe_jwt pattern names its trust domain literally: spiffe://<trust domain>/<path pattern>',
    path: ['id'],
  });

/** Claims the broker always decides itself: policy may not copy or set them. */
export const REGISTERED_CLAIMS = ['iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti', 'client_id', 'scope', 'scp', 'act', 'may_act', 'cnf'] as const;
const claimName = z
  .string()
  .regex(/^[A-Za-z][A-Za-z0-9_.:-]{0,63}$/, 'must be a claim name (letters, digits, _ . : -)')
  .refine((name) => !(REGISTERED_CLAIMS as readonly string[]).includes(name), 'is a registered claim the broker sets itself');

export const ACTOR_TRUSTS = ['workload', 'broker'] as const;
/** Ceiling of `limits.maxIssuedTokenBytes`: no token this broker issued, under any config, is longer. */
export const MAX_ISSUED_TOKEN_BYTES_LIMIT = 65_536;
/** Hard ceiling for any configured delegation chain depth. */
const MAX_CHAIN_DEPTH_LIMIT = 32;

/** Defaults for limits.connections: a silent or slow client is cut off well before it could tie up a slot for long. */
const CONNECTION_LIMIT_DEFAULTS = {
  maxConnections: 1_024,
  firstByteTimeoutMs: 5_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  idleTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
};

const connectionLimitsSchema = z
  .object({
    maxConnections: z
      .number()
      .int()
      .min(1)
      .max(65_536)
      .default(CONNECTION_LIMIT_DEFAULTS.maxConnections)
      .describe('Most open connections; at the cap the longest-idle connection (no request in flight) is closed for a newcomer, which is refused only when every connection is busy'),
    firstByteTimeoutMs: z
      .number()
      .int()
      .min(100)
      .max(60_000)
      .default(CONNECTION_LIMIT_DEFAULTS.firstByteTimeoutMs)
      .describe('A new connection that sends no byte within this is closed'),
    headersTimeoutMs: z
      .number()
      .int()
      .min(100)
      .max(60_000)
      .default(CONNECTION_LIMIT_DEFAULTS.headersTimeoutMs)
      .describe('Time from the first byte of a request to the end of its headers; past it the connection gets 408 and is closed'),
    requestTimeoutMs: z
      .number()
      .int()
      .min(100)
      .max(300_000)
      .default(CONNECTION_LIMIT_DEFAULTS.requestTimeoutMs)
      .describe('Time to receive a whole request, body included; past it the connection gets 408 and is closed'),
    idleTimeoutMs: z
      .number()
      .int()
      .min(100)
      .max(300_000)
      .default(CONNECTION_LIMIT_DEFAULTS.idleTimeoutMs)
      .describe('A connection on which no byte moves either way for this long is closed, a request in progress included: keep it above the slowest response'),
    keepAliveTimeoutMs: z
      .number()
      .int()
      .min(100)
      .max(300_000)
      .default(CONNECTION_LIMIT_DEFAULTS.keepAliveTimeoutMs)
      .describe('How long an idle keep-alive connection is kept between requests; behind a proxy, above its idle timeout'),
  })
  .strict()
  // Node's http server refuses headersTimeout > requestTimeout; a first-byte bound above the headers bound would never fire first.
  .refine((limits) => limits.headersTimeoutMs <= limits.requestTimeoutMs, { message: 'must not exceed requestTimeoutMs', path: ['headersTimeoutMs'] })
  .refine((limits) => limits.firstByteTimeoutMs <= limits.headersTimeoutMs, { message: 'must not exceed headersTimeoutMs', path: ['firstByteTimeoutMs'] })
  .default(CONNECTION_LIMIT_DEFAULTS)
  .describe('Bounds on each phase of an HTTP connection and on how many may be open');

/** Exact string, or a glob: `*` = any run without `/`, `**` = any run. Always anchored. */
const pattern = z.string().min(1).describe('exact value or glob (* within a path segment, ** across segments)');

const ruleSchema = z
  .object({
    id: z.string().min(1),
    description: z.string().optional(),
    match: z
      .object({
        clients: z.array(pattern).optional().describe('Client ids'),
        grantTypes: z.array(z.enum(GRANT_TYPE_NAMES)).optional(),
        endpoints: z
          .array(z.enum(['token', 'json-exchange', 'spiffe-exchange']))
          .optional()
          .describe('Front doors the request came through (see endpoints)'),
        subjectTokenTypes: z.array(tokenTypeUrn).optional(),
        issuers: z.array(pattern).optional().describe('Exact or glob issuer of the subject token'),
        subjects: z.array(pattern).optional().describe('Subject of the subject token'),
        requestedTokenTypes: z.array(tokenTypeUrn).optional(),
        attributes: z
          .record(
            z.string().min(1).refine((name) => !['__proto__', 'constructor', 'prototype'].includes(name), 'is not an attribute name'),
            z.union([pattern, z.array(pattern).min(1)]),
          )
          .optional()
          .describe('Subject identity attributes (as the validator plugin names them): each must be present and match one pattern'),
        validators: z.array(z.string().min(1)).optional().describe('Plugins (by name) whose validator verified the subject token'),
        audiences: z
          .array(pattern)
          .optional()
          .describe('The request names at least one audience or resource, and each matches one of these'),
        actor: z
          .object({
            trust: z
              .array(z.enum(ACTOR_TRUSTS))
              .min(1)
              .optional()
              .describe('Kinds of actor accepted: workload (a SPIFFE JWT-SVID) and/or broker (a token this broker issued); default both'),
            issuers: z.array(pattern).optional().describe('Issuer of the actor token'),
            subjects: z.array(pattern).optional().describe('Subject (e.g. SPIFFE ID) of the actor token'),
            priorActors: z
              .array(pattern)
              .optional()
              .describe('Every actor already in the chain (sub of each nested act) must match one of these'),
            maxDepth: z.number().int().min(1).max(MAX_CHAIN_DEPTH_LIMIT).optional().describe('Most actors the issued chain may hold'),
          })
          .strict()
          .optional()
          .describe('Delegation only: the rule applies to requests with an actor token that fits all of these'),
        when: z
          .string()
          .min(1)
          .optional()
          .describe('CEL condition over client, subject, actor and request; must be true (type-checked at load)'),
      })
      .strict()
      .default({}),
    grant: z
      .object({
        audiences: z.array(pattern).default([]).describe('Audiences and resources that may be requested'),
        defaultAudiences: z.array(z.string().min(1)).default([]).describe('Issued when the request names none'),
        scopes: z.array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'must be a scope token')).default([]),
        defaultScopes: z.array(z.string()).default([]).describe('Issued when the request names no scope'),
        maxLifetimeSeconds: z.number().int().positive().max(86_400).default(600),
        allowLifetimeBeyondSubject: z
          .boolean()
          .default(false)
          .describe('Let the issued token outlive the subject token (off: exp <= subject exp)'),
        issuerParameters: z
          .record(z.string().min(1), z.union([z.string(), z.array(z.string()).min(1)]))
          .default({})
          .describe('Passed to the issuer plugin (e.g. SPIRE selectors); templates: {subject} {issuer} {client} {attributes.NAME}'),
        delegation: z
          .object({
            allowed: z.boolean().default(false).describe('Apply this rule to requests with an actor token (off: impersonation only)'),
            actorMustBeClient: z
              .boolean()
              .default(true)
              .describe('The actor is the authenticated client itself (its SPIFFE ID, or its client id)'),
          })
          .strict()
          .default({ allowed: false, actorMustBeClient: true }),
        claims: z
          .object({
            copy: z.array(claimName).default([]).describe('Subject token claims copied as they are, when present'),
            set: z.record(claimName, z.string()).default({}).describe('Claims set from templates: {subject} {issuer} {client} {attributes.NAME}'),
          })
          .strict()
          .default({ copy: [], set: {} })
          .describe('Claims mapped into the issued token (issuers that cannot carry claims refuse such grants)'),
      })
      .strict()
      .default({
        audiences: [],
        defaultAudiences: [],
        scopes: [],
        defaultScopes: [],
        maxLifetimeSeconds: 600,
        allowLifetimeBeyondSubject: false,
        issuerParameters: {},
        delegation: { allowed: false, actorMustBeClient: true },
        claims: { copy: [], set: {} },
      }),
  })
  .strict();

const tlsHandshake = {
  handshakeTimeoutMs: z
    .number()
    .int()
    .min(100)
    .max(60_000)
    .default(5_000)
    .describe('A TLS handshake not finished within this is dropped (a client that opens connections and stalls the handshake ties up no slot for long)'),
};

const listenTlsSchema = z
  .union([
    z
      .object({
        certFile: z.string().min(1).describe('PEM certificate, leaf first (intermediates may follow)'),
        keyFile: z.string().min(1).describe('PEM private key of the certificate'),
        caFile: z.string().min(1).optional().describe('PEM intermediate CA certificates, sent after the certificate to complete its chain'),
        ...tlsHandshake,
      })
      .strict()
      .describe('Certificate and key from PEM files (relative to the config file), reloaded when they change'),
    z
      .object({
        spiffe: z
          .object({
            socket: z.string().min(1).optional().describe('Workload API address (unix:///path or tcp://ip:port); default SPIFFE_ENDPOINT_SOCKET'),
            spiffeId: z.string().startsWith('spiffe://').optional().describe('Which of the workload\'s X.509-SVIDs to serve, when it has several (default: the first)'),
          })
          .strict(),
        ...tlsHandshake,
      })
      .strict()
      .describe("The broker's own X.509-SVID from the SPIFFE Workload API, rotated as the agent rotates it (needs @tessera/spiffe)"),
  ])
  .optional()
  .describe('Serve HTTPS; the issuer must then be https');

export const brokerConfigSchema = z
  .object({
    $schema: z.string().optional(),
    issuer: publicUrl.describe('Issuer identifier (RFC 8414): the public base URL; tokens sent here must name it in aud'),
    listen: z
      .object({
        host: z.string().default('127.0.0.1'),
        port: z.number().int().min(0).max(65_535).default(8080).describe('Overridden by the PORT environment variable'),
        tls: listenTlsSchema,
      })
      .strict()
      .default({ host: '127.0.0.1', port: 8080 }),
    dataDir: z.string().default('.tessera').describe('Where generated keys are kept (relative to the config file)'),
    network: z
      .object({
        allowLoopbackHttp: z
          .boolean()
          .default(false)
          .describe('Allow fetches to loopback, plain HTTP included (development and tests only)'),
        allowPrivateNetworks: z
          .array(z.union([z.cidrv4(), z.cidrv6()], { error: 'must be a CIDR range such as 10.0.4.0/24 or fd00:4::/64' }))
          .default([])
          .describe('CIDR ranges (e.g. 10.0.4.0/24) that fetches may reach although not public; loopback is governed by allowLoopbackHttp only'),
        timeoutMs: z.number().int().positive().max(30_000).default(5_000),
        maxResponseBytes: z.number().int().positive().max(4_194_304).default(524_288),
      })
      .strict()
      .default({ allowLoopbackHttp: false, allowPrivateNetworks: [], timeoutMs: 5_000, maxResponseBytes: 524_288 }),
    keys: z
      .object({
        algorithm: z.enum(SIGNING_ALGORITHMS).default('ES256').describe('Algorithm of a generated key'),
        files: z
          .array(
            z
              .object({
                path: z.string().min(1).describe('PKCS#8 PEM or private JWK file'),
                kid: z.string().optional().describe('Default: the RFC 7638 thumbprint'),
                algorithm: z.enum(SIGNING_ALGORITHMS).optional().describe('Default: inferred from the key type'),
                use: z
                  .enum(KEY_USES)
                  .optional()
                  .describe('sign (default): may sign, and the first such key does; publish: only published at /keys, to stage a key across a fleet before it signs, or to keep a retired key until its tokens expired'),
              })
              .strict(),
          )
          .default([])
          .describe('Signing keys; the first with use sign signs, all are published'),
        generate: z.boolean().default(false).describe('Generate and persist a key under dataDir when none is given (development only)'),
        publishAheadSeconds: z
          .number()
          .int()
          .min(0)
          .max(86_400)
          .default(DEFAULT_PUBLISH_AHEAD_SECONDS)
          .describe('On a reload that changes the signing key, the new key is published at once and signs only this much later; also the max-age of /keys'),
      })
      .strict()
      .default({ algorithm: 'ES256', files: [], generate: false, publishAheadSeconds: DEFAULT_PUBLISH_AHEAD_SECONDS }),
    clientAuth: z
      .object({
        assertionMaxLifetimeSeconds: z.number().int().positive().max(3_600).default(300),
        clockSkewSeconds: z.number().int().min(0).max(300).default(60),
        algorithms: z.array(z.enum(ASSERTION_ALGORITHMS)).min(1).default(['RS256', 'ES256', 'EdDSA', 'PS256']),
        assertionAudience: z
          .enum(['issuer-or-token-endpoint', 'issuer'])
          .default('issuer-or-token-endpoint')
          .describe(
            "Values a client assertion's aud may hold; any other value refuses it. issuer: the issuer identifier only (draft-ietf-oauth-rfc7523bis); issuer-or-token-endpoint also accepts the token endpoint URL, as RFC 7523 and OIDC Core clients send",
          ),
      })
      .strict()
      .default({ assertionMaxLifetimeSeconds: 300, clockSkewSeconds: 60, algorithms: ['RS256', 'ES256', 'EdDSA', 'PS256'], assertionAudience: 'issuer-or-token-endpoint' }),
    clients: z
      .array(clientSchema)
      .default([])
      .refine((clients) => new Set(clients.map((client) => client.id)).size === clients.length, 'client id listed twice'),
    plugins: z
      .array(
        z
          .object({
            use: z.string().min(1).describe('Package name or path (relative to the config file) of the plugin'),
            config: z.unknown().default({}).describe("The plugin's own config block"),
          })
          .strict(),
      )
      .default([]),
    policy: z
      .object({
        rules: z
          .array(ruleSchema)
          .default([])
          .refine((rules) => new Set(rules.map((rule) => rule.id)).size === rules.length, 'rule id listed twice'),
      })
      .strict()
      .default({ rules: [] }),
    endpoints: z
      .object({
        token: z
          .object({ enabled: z.boolean().default(true) })
          .strict()
          .default({ enabled: true })
          .describe('OAuth token endpoint at {issuer}/token (form-encoded, RFC 6749/8693/7523), with RFC 8414 metadata'),
        jsonExchange: z
          .object({ enabled: z.boolean().default(false), path: endpointPath.default('/v1/exchange/token') })
          .strict()
          .default({ enabled: false, path: '/v1/exchange/token' })
          .describe('Starfly-compatible token exchange: the RFC 8693 parameters as a JSON body'),
        spiffeExchange: z
          .object({
            enabled: z.boolean().default(false),
            path: endpointPath.default('/spiffe/exchange'),
            subjectTokenType: tokenTypeUrn.default('urn:ietf:params:oauth:token-type:jwt').describe('How the posted token is validated, unless the body names subject_token_type'),
            publicClient: z
              .string()
              .min(1)
              .optional()
              .describe('Client (auth method none) a request without client credentials acts as; without it, client authentication is required'),
          })
          .strict()
          .default({ enabled: false, path: '/spiffe/exchange', subjectTokenType: 'urn:ietf:params:oauth:token-type:jwt' })
          .describe('SPIFFE exchange: {"token", "audience"} in, {"jwt_svid", "spiffe_id", "expires_at"} out'),
        metrics: z
          .object({ enabled: z.boolean().default(true), path: endpointPath.default('/metrics') })
          .strict()
          .default({ enabled: true, path: '/metrics' })
          .describe('Prometheus metrics (no subjects or client ids in labels)'),
        revocation: z
          .object({ enabled: z.boolean().default(true) })
          .strict()
          .default({ enabled: true })
          .describe('RFC 7009 revocation at {issuer}/revoke (form-encoded) of access tokens this broker issued, by the authenticated client they were issued to'),
        introspection: z
          .object({
            enabled: z.boolean().default(true),
            clients: z
              .array(z.string().min(1))
              .default([])
              .describe('Clients (resource servers) that may introspect every token of this broker; any other authenticated client sees only tokens whose aud names it or that were issued to it'),
          })
          .strict()
          .default({ enabled: true, clients: [] })
          .describe('RFC 7662 introspection at {issuer}/introspect (form-encoded) of access tokens this broker issued, for authenticated clients; any token the caller may not see is reported inactive'),
      })
      .strict()
      .refine(
        (endpoints) => {
          // The admin API's path (http/admin-routes.ts) too: it exists whenever admin.clients is set.
          const taken = ['/token', '/revoke', '/introspect', '/keys', '/healthz', '/readyz', '/admin/revocations'];
          // Routes match case-insensitively, so /Token would shadow /token.
          const paths = [endpoints.jsonExchange.path, endpoints.spiffeExchange.path, endpoints.metrics.path].map((path) => path.toLowerCase());
          return new Set([...taken, ...paths]).size === taken.length + paths.length;
        },
        { message: 'endpoint paths must differ from each other and from /token, /revoke, /introspect, /keys, /healthz, /readyz, /admin/revocations' },
      )
      .default({
        token: { enabled: true },
        jsonExchange: { enabled: false, path: '/v1/exchange/token' },
        spiffeExchange: { enabled: false, path: '/spiffe/exchange', subjectTokenType: 'urn:ietf:params:oauth:token-type:jwt' },
        metrics: { enabled: true, path: '/metrics' },
        revocation: { enabled: true },
        introspection: { enabled: true, clients: [] },
      })
      .describe('Front doors; every exchange endpoint runs the same pipeline, policy and audit'),
    limits: z
      .object({
        maxBodyBytes: z.number().int().positive().max(1_048_576).default(65_536),
        validationTimeoutMs: z.number().int().positive().max(30_000).default(5_000),
        maxIssuedTokenBytes: z
          .number()
          .int()
          .min(1_024)
          .max(MAX_ISSUED_TOKEN_BYTES_LIMIT)
          .default(8_192)
          .describe('Larger issued tokens are refused (invalid_request) rather than sent'),
        conditionTimeoutMs: z
          .number()
          .int()
          .min(10)
          .max(1_000)
          .default(100)
          .describe('Wall-clock backstop for a policy condition (match.when) that iterates or binds (its cost is already bounded at load); past it the rule does not match'),
        connections: connectionLimitsSchema,
        inFlight: inFlightSchema,
        verifiedTokens: verifiedTokensSchema,
        perClient: rateLimitSchema
          .optional()
          .describe('Token requests each authenticated client may make per window, unless its own rateLimit says otherwise (default: unlimited); past it 429 with Retry-After'),
      })
      .strict()
      .default({ maxBodyBytes: 65_536, validationTimeoutMs: 5_000, maxIssuedTokenBytes: 8_192, conditionTimeoutMs: 100, connections: CONNECTION_LIMIT_DEFAULTS, inFlight: IN_FLIGHT_DEFAULTS, verifiedTokens: VERIFIED_TOKEN_DEFAULTS }),
    delegation: z
      .object({
        maxChainDepth: z
          .number()
          .int()
          .min(1)
          .max(MAX_CHAIN_DEPTH_LIMIT)
          .default(5)
          .describe('Most actors a delegation chain (nested act) may hold; deeper requests are refused'),
        actorTrust: z
          .record(z.string().regex(/^[a-z][a-z0-9]*(-[a-z0-9]+)*$/, 'a plugin name'), z.enum(['workload', 'broker']))
          .optional()
          .describe(
            'Plugins whose validated identities may act for others (actor_token), by plugin name: workload (SPIFFE JWT-SVIDs) or broker (tokens this broker issued). The whole list when given; by default the built-in packages @tessera/plugin-spiffe (workload) and @tessera/plugin-access-token (broker), where loaded',
          ),
      })
      .strict()
      .default({ maxChainDepth: 5 }),
    audit: auditConfigSchema,
    store: storeConfigSchema,
    admin: adminConfigSchema,
    tracing: tracingConfigSchema,
    log: z
      .object({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info') })
      .strict()
      .default({ level: 'info' }),
    lifecycle: z
      .object({
        drainTimeoutMs: z
          .number()
          .int()
          .min(0)
          .max(300_000)
          .default(10_000)
          .describe('On SIGTERM or SIGINT, how long requests in flight may take to finish before their connections are cut (exit status 1); keep it below the orchestrator grace period'),
      })
      .strict()
      .default({ drainTimeoutMs: 10_000 })
      .describe('Process lifecycle of tessera serve'),
    reload: z
      .object({
        watch: z.boolean().default(true).describe('tessera serve reloads when a config file or directory it was given changes (SIGHUP always reloads)'),
        debounceMs: z
          .number()
          .int()
          .min(50)
          .max(10_000)
          .default(300)
          .describe('Quiet time after the last change before the reload: editors and ConfigMap updates write in several steps'),
      })
      .strict()
      .default({ watch: true, debounceMs: 300 })
      .describe('Hot reload of tessera serve (SIGHUP, config file changes)'),
  })
  .strict()
  // An http issuer would name URLs the TLS listener never answers.
  .refine((config) => config.listen.tls === undefined || config.issuer.startsWith('https://'), { message: 'must be https when listen.tls is set', path: ['issuer'] });

export type BrokerConfig = z.output<typeof brokerConfigSchema>;
export type BrokerConfigInput = z.input<typeof brokerConfigSchema>;
export type ClientConfig = BrokerConfig['clients'][number];
export type PolicyRuleConfig = BrokerConfig['policy']['rules'][number];
