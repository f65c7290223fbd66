import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { parseArgs } from 'node:util';
import { loadConfigFiles } from '../config/load.js';

export const HEALTHCHECK_USAGE = `usage: tessera healthcheck [--ready] [--url URL | --config PATH...] [--timeout-ms N]

Probes a running broker for a container HEALTHCHECK or an exec probe: GET /healthz (live), or /readyz
with --ready, answered 200 within the timeout (default 2000 ms). The address is --url, else the listen
address of --config, else http://127.0.0.1:$PORT (PORT defaults to 8080). Over https to a loopback
address the certificate is not verified: the probe sends nothing secret and learns only a status code.
To any other address it is verified as usual (NODE_EXTRA_CA_CERTS adds a CA).

exit: 0 healthy (ready), 1 not, 2 usage

examples:
  tessera healthcheck
  tessera healthcheck --ready --config /etc/tessera/config.yaml
  tessera healthcheck --url https://127.0.0.1:8443/oauth/healthz
`;

export class HealthcheckUsageError extends Error {}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|\[::1\]|localhost)$/;

/** PORT as serve reads it; a value serve could not listen on is a usage error here. */
function envPort(): number | undefined {
  const text = process.env.PORT;
  if (text === undefined || text === '') return undefined;
  const port = Number(text);
  if (!Number.isInteger(port) || port < 1 || port > 65_535) throw new HealthcheckUsageError('PORT must be a port number from 1 to 65535');
  return port;
}

/** Where the broker `config` describes listens, seen from the same host. */
async function urlFromConfig(paths: readonly string[], ready: boolean): Promise<URL> {
  const { config } = await loadConfigFiles(paths);
  const port = envPort() ?? config.listen.port;
  // A broker bound to every address answers on loopback too (on [::1] when bound to ::, which may be IPv6 only).
  const host = config.listen.host === '0.0.0.0' || config.listen.host === '' ? '127.0.0.1' : config.listen.host === '::' ? '[::1]' : config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
  const base = new URL(config.issuer).pathname.replace(/\/$/, '');
  return new URL(`${config.listen.tls ? 'https' : 'http'}://${host}:${port}${base}/${ready ? 'readyz' : 'healthz'}`);
}

/** One GET; resolves with the status code or a short reason it failed. */
function probe(url: URL, timeoutMs: number): Promise<{ status: number } | { failure: string }> {
  const https = url.protocol === 'https:';
  const send = https ? httpsRequest : httpRequest;
  return new Promise((done) => {
    const req = send(url, { method: 'GET', timeout: timeoutMs, ...(https && LOOPBACK.test(url.hostname) ? { rejectUnauthorized: false } : {}) }, (res) => {
      res.resume();
      done({ status: res.statusCode ?? 0 });
    });
    req.on('timeout', () => {
      req.destroy();
      done({ failure: `no answer within ${timeoutMs} ms` });
    });
    req.on('error', (error: NodeJS.ErrnoException) => done({ failure: error.code ?? error.message }));
    req.end();
  });
}

export async function healthcheckCommand(args: string[], io: { out(text: string): void; err(text: string): void }): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { url: { type: 'string' }, config: { type: 'string', short: 'c', multiple: true }, ready: { type: 'boolean' }, 'timeout-ms': { type: 'string' } },
  });
  const configPaths = [...(values.config ?? []), ...positionals];
  if (values.url !== undefined && configPaths.length > 0) throw new HealthcheckUsageError('give --url or --config, not both');
  const timeoutMs = Number(values['timeout-ms'] ?? 2000);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 60_000) throw new HealthcheckUsageError('--timeout-ms must be a whole number from 1 to 60000');
  const ready = values.ready ?? false;
  let url: URL;
  if (values.url !== undefined) {
    if (!URL.canParse(values.url) || !/^https?:$/.test(new URL(values.url).protocol)) throw new HealthcheckUsageError('--url must be an http or https URL');
    url = new URL(values.url);
  } else if (configPaths.length > 0) {
    url = await urlFromConfig(configPaths, ready);
  } else {
    url = new URL(`http://127.0.0.1:${envPort() ?? 8080}/${ready ? 'readyz' : 'healthz'}`);
  }
  const outcome = await probe(url, timeoutMs);
  if ('status' in outcome && outcome.status === 200) {
    io.out(`${url.href}: ${ready ? 'ready' : 'live'}\n`);
    return 0;
  }
  io.err(`${url.href}: ${'status' in outcome ? `answered ${outcome.status}` : outcome.failure}\n`);
  return 1;
}
