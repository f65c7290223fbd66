#!/usr/bin/env node
import 'reflect-metadata';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { createBroker } from '../broker.js';
import { ConfigError } from '../config/errors.js';
import { checkConfig } from '../config/check.js';
import { brokerJsonSchema } from '../config/json-schema.js';
import { loadConfigFile } from '../config/load.js';
import { generatePrivateJwk } from '../keys/key-ring.js';
import { hashClientSecret } from '../oauth/client-secret.js';
import { SIGNING_ALGORITHMS } from '../config/schema.js';

const USAGE = `usage: tessera <command>

  serve --config FILE              run the broker
  config validate FILE             check a config (exit 0 valid, 1 invalid)
  config schema                    print the config JSON Schema
  keys generate [--alg ES256] [--out FILE]
                                   write a new private signing JWK (stdout by default)
  secret hash                      read a client secret on stdin, print its scrypt hash for config
`;

class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return serve(rest);
    case 'config':
      return configCommand(rest);
    case 'keys':
      return keysCommand(rest);
    case 'secret':
      return secretCommand(rest);
    case undefined:
    case 'help':
    case '--help':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command ${command}`);
  }
}

async function serve(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' } } });
  if (!values.config) throw new UsageError('serve needs --config FILE');
  const loaded = await loadConfigFile(values.config);
  const broker = await createBroker(loaded.config, { baseDir: loaded.baseDir, locate: loaded.locate });
  const running = await broker.listen();
  process.stderr.write(`tessera listening on ${running.url} (issuer ${broker.info.issuer})\n`);
  await new Promise<void>((done) => {
    const stop = () => done();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await broker.close();
  return 0;
}

async function configCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'schema') {
    process.stdout.write(`${JSON.stringify(await brokerJsonSchema(), null, 2)}\n`);
    return 0;
  }
  if (sub === 'validate') {
    const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { config: { type: 'string', short: 'c' } } });
    const file = values.config ?? positionals[0];
    if (!file) throw new UsageError('config validate needs FILE');
    await checkConfig(await loadConfigFile(file));
    process.stdout.write(`${file}: valid\n`);
    return 0;
  }
  throw new UsageError('config validate FILE | config schema');
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
  },
  (error: unknown) => {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exitCode = 1;
    } else if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`${(error as Error).message}\n\n${USAGE}`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`tessera: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exitCode = 1;
    }
  },
);
