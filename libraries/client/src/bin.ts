#!/usr/bin/env node
import { EXCHANGE_USAGE, ExchangeUsageError, runExchangeCommand } from './cli.js';

// The same command as the broker's `tessera exchange`, for workloads that install only this package.
const usage = EXCHANGE_USAGE.replace(/^tessera exchange/, 'tessera-exchange');
const args = process.argv.slice(2);

if (args.includes('--help') || args.includes('-h')) {
  process.stdout.write(usage);
} else {
  runExchangeCommand(args).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      // Exit codes match `tessera exchange`: 2 for usage, 1 for anything else.
      if (error instanceof ExchangeUsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
        process.stderr.write(`${(error as Error).message}\n\n${usage}`);
        process.exitCode = 2;
      } else {
        process.stderr.write(`tessera-exchange: ${error instanceof Error ? error.message : String(error)}\n`);
        process.exitCode = 1;
      }
    },
  );
}
