import { z } from 'zod';

const hostPort = z
  .object({
    host: z.string().min(1),
    port: z.number().int().min(1).max(65_535).default(6_379),
  })
  .strict();

const secret = (what: string) => z.string().min(1).meta({ secret: true }).describe(`${what} (use a \${file:} reference)`);

/** A Redis URL names where, never who: credentials in a URL end up in logs and printed configs. */
const redisUrl = z.string().superRefine((value, ctx) => {
  if (!URL.canParse(value)) return void ctx.addIssue({ code: 'custom', message: 'must be a redis:// or rediss:// URL' });
  const url = new URL(value);
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') ctx.addIssue({ code: 'custom', message: 'must be a redis:// or rediss:// URL' });
  if (url.username || url.password) ctx.addIssue({ code: 'custom', message: 'must carry no credentials: use store.username and store.password' });
  if (url.search || url.hash) ctx.addIssue({ code: 'custom', message: 'must have no query or fragment' });
  if (url.pathname !== '' && url.pathname !== '/' && !/^\/\d{1,2}$/.test(url.pathname)) ctx.addIssue({ code: 'custom', message: 'path may only name a database number (/0)' });
});

const tlsSchema = z
  .object({
    ca: z.string().min(1).optional().describe('PEM CA certificates to trust instead of the system roots (e.g. ${file:/etc/tessera/redis-ca.pem})'),
    cert: z.string().min(1).optional().describe('PEM client certificate, for Redis servers that require one'),
    key: secret('PEM private key of the client certificate').optional(),
    servername: z.string().min(1).optional().describe('Server name to verify, when it differs from the host'),
  })
  .strict()
  .refine((tls) => (tls.cert === undefined) === (tls.key === undefined), 'cert and key go together')
  .describe('TLS to Redis (on with a rediss:// URL or this block); the server certificate is always verified');

const replicas = z
  .number()
  .int()
  .min(1)
  .max(1_024)
  .default(1)
  .describe('How many broker processes (replicas) share this store; more than one needs store.kind redis');

const memoryStore = z
  .object({ kind: z.literal('memory'), replicas })
  .strict()
  .refine((store) => store.replicas === 1, {
    message: 'a memory store lives in one process: replay and revocation state would not be shared between replicas (use store.kind: redis)',
    path: ['replicas'],
  })
  .describe('In this process only (the default): one broker process, nothing shared');

const redisStore = z
  .object({
    kind: z.literal('redis'),
    url: redisUrl.optional().describe('One Redis server: redis://host:6379/0, or rediss:// for TLS'),
    sentinel: z
      .object({
        masterName: z.string().min(1).describe('Name of the monitored master'),
        sentinels: z.array(hostPort).min(1),
        username: z.string().min(1).optional().describe('Sentinel ACL user'),
        password: secret('Sentinel password').optional(),
        tls: z.boolean().default(false).describe('Speak TLS to the sentinels too, with the store.tls settings (which it requires); the master speaks TLS whenever store.tls is set'),
      })
      .strict()
      .optional()
      .describe('Redis Sentinel: the master is found (and followed on failover) through these sentinels'),
    cluster: z
      .object({ nodes: z.array(hostPort).min(1).describe('Seed nodes; the rest of the cluster is discovered') })
      .strict()
      .optional()
      .describe('Redis Cluster'),
    username: z.string().min(1).optional().describe('Redis ACL user'),
    password: secret('Redis password').optional(),
    tls: tlsSchema.optional(),
    keyPrefix: z
      .string()
      .regex(/^[A-Za-z0-9:._{}-]{1,64}$/, 'letters, digits and : . _ - { } only')
      .default('tessera:')
      .describe('Prefix of every key the broker writes; brokers sharing one prefix share their state'),
    commandTimeoutMs: z
      .number()
      .int()
      .min(10)
      .max(10_000)
      .default(500)
      .describe('A command without an answer in this time fails, and the request depending on it gets 503'),
    connectTimeoutMs: z.number().int().min(100).max(60_000).default(2_000).describe('Bound on each connection attempt'),
    replicas,
  })
  .strict()
  .refine((store) => [store.url, store.sentinel, store.cluster].filter((where) => where !== undefined).length === 1, 'exactly one of url, sentinel or cluster is required')
  // Encrypted sentinels but a plaintext master is a half-protected link nobody means: say so at load.
  .refine((store) => !store.sentinel?.tls || store.tls !== undefined, { message: 'sentinel.tls needs store.tls too, or the master link stays plaintext', path: ['sentinel', 'tls'] })
  .describe('Redis: state shared by every broker process using the same Redis and keyPrefix');

export const storeConfigSchema = z
  .discriminatedUnion('kind', [memoryStore, redisStore])
  .default({ kind: 'memory', replicas: 1 })
  .describe('Where replay records, revocations, kill-switch entries and rate-limit counters live');

export type StoreConfig = z.output<typeof storeConfigSchema>;
export type RedisStoreConfig = Extract<StoreConfig, { kind: 'redis' }>;
