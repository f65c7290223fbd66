import { createRequire } from 'node:module';
import { PLUGIN_INIT_USAGE } from './plugin-init.js';
import { HEALTHCHECK_USAGE } from './healthcheck.js';

/** The version of the installed broker (core's package.json, from src/cli or dist/cli alike). */
export function brokerVersion(): string {
  return (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
}

/** What `tessera COMMAND --help` prints: usage, what it does, exit codes and an example or two. */
export const COMMAND_HELP: Readonly<Record<string, string>> = {
  healthcheck: HEALTHCHECK_USAGE,
  serve: `usage: tessera serve --config PATH... [--workers N]

Runs the broker. Repeat --config to merge files or directories, in order. PORT overrides the port.
SIGTERM/SIGINT drain and exit; SIGHUP reloads the config and reopens the audit file.
--workers N runs N processes on one port (needs store.kind redis).

exit: 0 drained cleanly, 1 invalid config, failed start, cut drain or unwritten audit records, 2 usage

examples:
  tessera serve --config config/dev.yaml
  tessera serve --config /etc/tessera/base.yaml --config /etc/tessera/conf.d --workers 2
`,
  config: `usage: tessera config validate PATH...
       tessera config print [--resolved] PATH...
       tessera config schema

validate: plans the broker exactly as serve does (plugins started for inspection, every cross-check) and
          prints every problem at once as FILE:LINE: path: message. Writes nothing, dials nothing: what
          only the network could tell (a Redis server, issuers' keys) is listed as "not checked".
print:    the merged config with secrets redacted (--resolved: with every default applied).
schema:   the config JSON Schema (for editors).

exit: 0 valid, 1 invalid, 2 usage

examples:
  tessera config validate /etc/tessera/broker.yaml
  tessera config print --resolved /etc/tessera/base.yaml /etc/tessera/conf.d
`,
  plugins: `usage: tessera plugins list [--json] --config PATH...

Plans the broker as serve does, plugins started for inspection only (nothing listens, nothing is dialled),
and prints the token types each validates and issues and the attributes it extracts.

exit: 0 listed, 1 invalid config or a plugin failed to start, 2 usage

example:
  tessera plugins list --config config/dev.yaml
`,
  policy: `usage: tessera policy explain --config PATH... --request FILE [--json]

Which rule decides the request described in FILE (JSON), why the others do not, and the claims the token
would carry. The decision is the exchange pipeline's own (delegation, policy, grant checks), on the broker
serve would plan; identities in FILE stand for verified tokens. Nothing is written or dialled, so the
kill switch in a shared store is not consulted.

exit: 0 allowed, 3 refused, 1 invalid config, 2 usage

example:
  tessera policy explain --config config/dev.yaml --request request.json
`,
  keys: `usage: tessera keys generate [--alg ES256|ES384|EdDSA|RS256|PS256] [--out FILE]

Writes a new private signing JWK to FILE (created with mode 0600, never overwritten) or stdout.

exit: 0 written, 1 FILE exists or cannot be written, 2 usage

example:
  tessera keys generate --out /etc/tessera/keys/2026-12.jwk
`,
  secret: `usage: tessera secret hash

Reads a client secret (at least 16 characters) on stdin and prints its scrypt hash for clients[].auth.secretHash.

exit: 0 printed, 2 usage or a secret too short

example:
  printf '%s' "$SECRET" | tessera secret hash
`,
  audit: `usage: tessera audit verify FILE...

Checks the audit hash chain across FILEs, the oldest rotated file first; each chain in them (one per
worker) is followed on its own.

exit: 0 intact, 1 at the first broken line (printed as FILE:LINE: reason), 2 usage

example:
  tessera audit verify /var/log/tessera/audit.jsonl.1 /var/log/tessera/audit.jsonl
`,
  plugin: PLUGIN_INIT_USAGE,
};
