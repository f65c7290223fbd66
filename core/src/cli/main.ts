#!/usr/bin/env node
import 'reflect-metadata';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { z } from 'zod';
import { tokens } from '@tessera/plugin-sdk';
import { createBroker } from '../broker.js';
import { announceListening, isServeWorker, leaveFleet, MAX_WORKERS, superviseWorkers, workerLogger, workerSlot } from './workers.js';
import { reloadOnHangUp, reopenAuditOnHangUp, shutDown, stopSignal } from '../lifecycle.js';
import { watchConfigPaths } from '../reload/watch.js';
import { startTracing } from '../telemetry/sdk.js';
import { auditVerifyCommand } from '../audit/verify.js';
import { ConfigError } from '../config/errors.js';
import { checkConfig } from '../config/check.js';
import { brokerJsonSchema } from '../config/json-schema.js';
import { loadConfigFiles } from '../config/load.js';
import { renderConfig } from '../config/print.js';
import { inspectConfig, type Inspection } from '../compose/inspect.js';
import type { GenerationPlan } from '../compose/plan.js';
import { brokerVersion, COMMAND_HELP } from './help.js';
import { formatPluginSummaries, summarizePlugins } from './plugins-list.js';
import { pluginCommand } from './plugin-init.js';
import { healthcheckCommand, HealthcheckUsageError, HEALTHCHECK_USAGE } from './healthcheck.js';
import { revocationsCommand, revokeCommand, REVOKE_USAGE, RevocationUsageError } from './revocations.js';
import { explainPolicy, explainRequestSchema, formatExplanation } from './policy-explain.js';
import { generatePrivateJwk } from '../keys/key-ring.js';
import { hashClientSecret } from '../oauth/client-secret.js';
import { SIGNING_ALGORITHMS } from '../config/schema.js';

const USAGE = `usage: tessera <command> [-h|--help]
       tessera --version

  serve --config PATH... [--workers N]
                                   run the broker; repeat --config to merge files or directories in order;
                                   --workers N runs N processes sharing the port (needs store.kind redis)
  config validate PATH...          check a config (exit 0 valid, 1 invalid)
  config print [--resolved] PATH...
                                   print the merged config, secrets redacted (--resolved: defaults applied)
  config schema                    print the config JSON Schema
  plugins list [--json] PATH...    start the configured plugins, print what each validates, issues, enriches
  plugin init NAME [--dir DIR]     scaffold a plugin package that builds and passes its contract test
  policy explain --config PATH... --request FILE [--json]
                                   which rule decides a described request, why the others do not, and the
                                   claims the token would carry (exit 0 allowed, 3 refused)
  exchange --broker URL --from SOURCE --audience A [...]
                                   workload side: exchange this workload's own token (tessera exchange --help)
  keys generate [--alg ES256] [--out FILE]
                                   write a new private signing JWK (stdout by default)
  secret hash                      read a client secret on stdin, print its scrypt hash for config
  revoke --config PATH... TARGET --expires-in DURATION [--reason R]
                                   kill switch: refuse a subject, client, issuer, SPIFFE ID prefix or token
                                   on every broker sharing the Redis store (tessera revoke --help)
  revocations list|delete --config PATH... [--json | TARGET]
                                   the kill-switch entries in force; delete one
  healthcheck [--ready] [--url URL | --config PATH...]
                                   probe a running broker's /healthz (/readyz): exit 0 healthy, 1 not
  audit verify FILE...             check the audit hash chain across files, oldest rotated file first
                                   (exit 0 intact, 1 at the first broken line, printed as FILE:LINE: reason)
`;

class UsageError extends Error {
  /** The usage text printed after the message: the whole CLI's, or one command's. */
  constructor(
    message: string,
    readonly usage = USAGE,
  ) {
    super(message);
  }
}

/** Per-command help: `-h`/`--help` anywhere after the command, or `tessera help COMMAND`. */
function wantsHelp(rest: readonly string[]): boolean {
  return rest.includes('--help') || rest.includes('-h');
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command !== undefined && COMMAND_HELP[command] !== undefined && wantsHelp(rest)) {
    process.stdout.write(COMMAND_HELP[command]);
    return 0;
  }
  switch (command) {
    case 'serve':
      return serve(rest);
    case 'config':
      return configCommand(rest);
    case 'keys':
      return keysCommand(rest);
    case 'secret':
      return secretCommand(rest);
    case 'plugins':
      return pluginsCommand(rest);
    case 'plugin':
      return pluginCommand(rest);
    case 'policy':
      return policyCommand(rest);
    case 'exchange':
      return exchangeCommand(rest);
    case 'revoke':
    case 'revocations':
      return killSwitchCommand(command, rest);
    case 'healthcheck':
      try {
        return await healthcheckCommand(rest, { out: (text) => process.stdout.write(text), err: (text) => process.stderr.write(text) });
      } catch (error) {
        if (error instanceof HealthcheckUsageError) throw new UsageError(error.message, HEALTHCHECK_USAGE);
        throw error;
      }
    case 'audit':
      if (rest[0] !== 'verify' || rest.length < 2) throw new UsageError('audit verify FILE...  (rotated files oldest first)');
      return auditVerifyCommand(rest.slice(1), (text) => process.stdout.write(text), (text) => process.stderr.write(text));
    case '--version':
    case '-V':
      process.stdout.write(`tessera ${brokerVersion()}\n`);
      return 0;
    case 'help':
      if (rest[0] !== undefined) return main([rest[0], '--help']);
      process.stdout.write(USAGE);
      return 0;
    case undefined:
    case '-h':
    case '--help':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command ${command}`);
  }
}

async function serve(args: string[]): Promise<number> {
  const { paths, values } = parseConfigArgs({ args, options: { ...CONFIG_OPTION, workers: { type: 'string' } } });
  if (paths.length === 0) throw new UsageError('serve needs --config PATH');
  const workers = Number(values.workers ?? 1);
  if (!Number.isInteger(workers) || workers < 1 || workers > MAX_WORKERS) throw new UsageError(`--workers must be a whole number from 1 to ${MAX_WORKERS}`);
  const loaded = await loadConfigFiles(paths);
  if (workers > 1 && !isServeWorker()) return superviseWorkers(loaded.config, workers);
  const logger = workerLogger(loaded.config.log.level);
  // `configFiles`: the same paths are read again on every reload.
  const slot = workerSlot();
  const broker = await createBroker(loaded.config, { baseDir: loaded.baseDir, locate: loaded.locate, configFiles: paths, ...(logger ? { logger } : {}), ...(slot ? { worker: slot } : {}) });
  const log = broker.resolve(tokens.logger);
  // Restart-only (reload/config-diff.ts): one tracer provider per process.
  const stopTracing = await startTracing(loaded.config.tracing, log);
  // Handlers go in before the "listening" line: a supervisor may signal as soon as it reads it.
  const stopped = stopSignal(log);
  reopenAuditOnHangUp(broker, log);
  reloadOnHangUp(broker, log);
  // `reload.watch` and `reload.debounceMs` are read at each change, so a reload can turn the watch off.
  const watch = watchConfigPaths(
    paths,
    () => {
      if (!broker.config.reload.watch) return;
      log.info({}, 'reload: a config file changed, reading the config again');
      broker.reload().catch((error: unknown) => log.error({ err: error instanceof Error ? error.message : String(error) }, 'reload failed'));
    },
    { log, debounceMs: () => broker.config.reload.debounceMs },
  );
  const running = await broker.listen();
  announceListening(running.url, broker.info.issuer);
  const signal = await stopped;
  watch.close();
  const status = leaveFleet(await shutDown(broker, signal, log));
  // After the broker closed, so the spans of the last requests are in the final export.
  await stopTracing();
  // An audit write stuck in the kernel (a stalled pipe) would keep the process alive: exit anyway.
  if (status !== 0) process.exit(status);
  return status;
}

const CONFIG_OPTION = { config: { type: 'string', short: 'c', multiple: true } } as const;

/** Config files and directories, positional or `--config`, in command-line order: that order is the merge order. */
function parseConfigArgs<T extends ParseArgsConfig>(config: T): { paths: string[]; values: ReturnType<typeof parseArgs<T>>['values'] } {
  const { values, tokens = [] } = parseArgs({ ...config, tokens: true });
  const paths = tokens.flatMap((token) => {
    if (token.kind === 'positional') return [token.value];
    return token.kind === 'option' && token.name === 'config' && token.value !== undefined ? [token.value] : [];
  });
  return { paths, values };
}

async function configCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'schema') {
    process.stdout.write(`${JSON.stringify(await brokerJsonSchema(), null, 2)}\n`);
    return 0;
  }
  if (sub === 'validate') {
    const { paths } = parseConfigArgs({ args: rest, allowPositionals: true, options: CONFIG_OPTION });
    if (paths.length === 0) throw new UsageError('config validate needs PATH');
    try {
      const loaded = await loadConfigFiles(paths);
      const unchecked = await checkConfig(loaded);
      process.stdout.write(`${loaded.files.join(', ')}: valid\n`);
      // Valid as far as this machine can tell: what serve would still find out over the network.
      for (const { what, why } of unchecked) process.stdout.write(`  not checked: ${what}: ${why}\n`);
      return 0;
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      // One `file:line: path: message` per line, no heading: easy to grep and for editors to jump to.
      process.stderr.write(`${error.problems.join('\n')}\n`);
      return 1;
    }
  }
  if (sub === 'print') {
    const { paths, values } = parseConfigArgs({
      args: rest,
      allowPositionals: true,
      options: { ...CONFIG_OPTION, resolved: { type: 'boolean' } },
    });
    if (paths.length === 0) throw new UsageError('config print needs PATH');
    process.stdout.write(await renderConfig(await loadConfigFiles(paths), { resolved: values.resolved ?? false }));
    return 0;
  }
  throw new UsageError('config validate PATH... | config print [--resolved] PATH... | config schema');
}

/** The workload-side client is a package of its own (cloud SDKs): core loads it only for this command. */
interface ClientPackage {
  runExchangeCommand(args: string[]): Promise<number>;
  EXCHANGE_USAGE: string;
  ExchangeUsageError: new (...args: never[]) => Error;
}

async function exchangeCommand(args: string[]): Promise<number> {
  const specifier = '@tessera/client';
  let client: ClientPackage;
  try {
    client = (await import(specifier)) as ClientPackage;
  } catch {
    throw new UsageError('tessera exchange needs the @tessera/client package (npm install @tessera/client)');
  }
  if (wantsHelp(args)) {
    process.stdout.write(client.EXCHANGE_USAGE);
    return 0;
  }
  try {
    return await client.runExchangeCommand(args);
  } catch (error) {
    if (error instanceof client.ExchangeUsageError) throw new UsageError(error.message, client.EXCHANGE_USAGE);
    throw error;
  }
}

async function killSwitchCommand(command: 'revoke' | 'revocations', args: string[]): Promise<number> {
  if (wantsHelp(args)) {
    process.stdout.write(REVOKE_USAGE);
    return 0;
  }
  const io = { out: (text: string) => process.stdout.write(text), err: (text: string) => process.stderr.write(text) };
  try {
    return await (command === 'revoke' ? revokeCommand(args, io) : revocationsCommand(args, io));
  } catch (error) {
    if (error instanceof RevocationUsageError) throw new UsageError(error.message, REVOKE_USAGE);
    throw error;
  }
}

async function pluginsCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'list') throw new UsageError('plugins list [--json] --config PATH...');
  const { paths, values } = parseConfigArgs({ args: rest, allowPositionals: true, options: { ...CONFIG_OPTION, json: { type: 'boolean' } } });
  if (paths.length === 0) throw new UsageError('plugins list needs --config PATH');
  const inspection = await inspected(paths);
  try {
    // Token types are known only once plugins have started: they start with purpose `check`, nothing listens.
    const summaries = summarizePlugins(inspection.plan.plugins);
    process.stdout.write(values.json ? `${JSON.stringify(summaries, null, 2)}\n` : formatPluginSummaries(summaries));
  } finally {
    await inspection.close();
  }
  return 0;
}

/** Exit code of `policy explain` when the described request would be refused. */
const EXIT_REFUSED = 3;

async function policyCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const usage = 'policy explain --config PATH... --request FILE [--json]';
  if (sub !== 'explain') throw new UsageError(usage);
  const { paths, values } = parseConfigArgs({ args: rest, options: { ...CONFIG_OPTION, request: { type: 'string' }, json: { type: 'boolean' } } });
  if (paths.length === 0 || values.request === undefined) throw new UsageError(usage);
  let described: unknown;
  try {
    described = JSON.parse(readFileSync(values.request, 'utf8'));
  } catch (error) {
    throw new UsageError(`--request ${values.request}: ${error instanceof SyntaxError ? 'not JSON' : 'cannot be read'}`);
  }
  const checked = explainRequestSchema.safeParse(described);
  if (!checked.success) throw new UsageError(`--request ${values.request}:\n${z.prettifyError(checked.error)}`);
  const inspection = await inspected(paths);
  try {
    const report = await explainPolicy(checked.data, { pipeline: inspection.plan.pipeline, issuers: inspection.plan.issuers, brokerIssuer: inspection.plan.config.issuer });
    // What a real request would also meet and explain cannot see: the shared store's kill switch.
    const notChecked = inspection.unchecked.filter(({ what }) => what === 'store');
    process.stdout.write(
      values.json
        ? `${JSON.stringify({ ...report, notChecked }, null, 2)}\n`
        : `${formatExplanation(report)}${notChecked.map(({ what, why }) => `not checked: ${what}: ${why}\n`).join('')}`,
    );
    return report.decision.allowed ? 0 : EXIT_REFUSED;
  } finally {
    await inspection.close();
  }
}

/** The config planned as serve plans it, for a read-only command; a config serve would refuse is refused. */
async function inspected(paths: readonly string[]): Promise<Inspection & { plan: GenerationPlan }> {
  const inspection = await inspectConfig(await loadConfigFiles(paths));
  if (!inspection.plan) {
    await inspection.close();
    throw new ConfigError(inspection.problems);
  }
  return inspection as Inspection & { plan: GenerationPlan };
}

async function keysCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'generate') throw new UsageError('keys generate [--alg ALG] [--out FILE]');
  const { values } = parseArgs({ args: rest, options: { alg: { type: 'string' }, out: { type: 'string' } } });
  const alg = (values.alg ?? 'ES256') as (typeof SIGNING_ALGORITHMS)[number];
  if (!SIGNING_ALGORITHMS.includes(alg)) throw new UsageError(`--alg must be one of ${SIGNING_ALGORITHMS.join(', ')}`);
  const text = `${JSON.stringify(await generatePrivateJwk(alg), null, 2)}\n`;
  if (values.out) await writeFile(values.out, text, { mode: 0o600, flag: 'wx' });
  else process.stdout.write(text);
  return 0;
}

async function secretCommand(args: string[]): Promise<number> {
  if (args[0] !== 'hash') throw new UsageError('secret hash  (reads the secret on stdin)');
  const secret = readFileSync(0, 'utf8').replace(/\r?\n$/, '');
  if (secret.length < 16) throw new UsageError('refusing a client secret shorter than 16 characters');
  process.stdout.write(`${await hashClientSecret(secret)}\n`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Done: a handle a plugin failed to release must not keep the command alive (stdout and stderr are
    // synchronous for files and pipes here). Unref'd, so it never delays an exit that happens anyway.
    setTimeout(() => process.exit(code), 2_000).unref();
  },
  (error: unknown) => {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exitCode = 1;
    } else if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`${(error as Error).message}\n\n${error instanceof UsageError ? error.usage : USAGE}`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`tessera: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exitCode = 1;
    }
  },
);
