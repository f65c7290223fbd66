/**
 * The two same-run references every figure is divided by: an empty Koa POST handler (the HTTP ceiling
 * of a Node server on one core) and the crypto bound (one core's ES256 signs and verifies, through
 * node:crypto and through WebCrypto, the API jose calls). Each runs in a process of its own, pinned
 * like the servers are.
 */
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import { spawnPinned, type BenchSystem, type StartOptions } from './system.js';

const SELF = fileURLToPath(import.meta.url);

export interface CryptoRates {
  readonly nodeSign: number;
  readonly nodeVerify: number;
  readonly webSign: number;
  readonly webVerify: number;
}

/** Exchanges per second one core could do if `verifies` ES256 verifies and `signs` signs were the only cost. */
export function cryptoBound(rates: CryptoRates, verifies: number, signs: number): { node: number; webCrypto: number } {
  return { node: 1 / (verifies / rates.nodeVerify + signs / rates.nodeSign), webCrypto: 1 / (verifies / rates.webVerify + signs / rates.webSign) };
}

async function firstLine(child: ChildProcess, what: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`${what} exited with ${code}`)));
  });
}

/** ES256 operations per second on core `cpu`. */
export async function measureCryptoRates(cpu: number | undefined): Promise<CryptoRates> {
  const child = spawnPinned(cpu, process.execPath, [SELF, 'crypto'], { stdio: ['ignore', 'pipe', 'inherit'] });
  return JSON.parse(await firstLine(child, 'the crypto reference')) as CryptoRates;
}

export async function startKoa(options: StartOptions): Promise<BenchSystem> {
  const child = spawnPinned(options.cpu, process.execPath, [SELF, 'koa'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const { url } = JSON.parse(await firstLine(child, 'the Koa reference')) as { url: string };
  const { version } = (await import('koa/package.json', { with: { type: 'json' } })).default as { version: string };
  // Koa answers anything: one body repeated is enough.
  const body = 'grant_type=client_credentials&scope=read';
  return {
    name: 'koa',
    version: `koa ${version}, node ${process.version}`,
    pid: child.pid!,
    scenarios: [{ name: 'empty Koa handler', url: `${url}/token`, headers: { 'content-type': 'application/x-www-form-urlencoded' }, bodies: async (count) => Array.from({ length: count }, () => body) }],
    stop: async () => {
      const exited = new Promise((done) => child.once('exit', done));
      child.kill();
      await exited;
    },
  };
}

async function cryptoChild(): Promise<void> {
  const { generateKeyPairSync, sign, verify, webcrypto } = await import('node:crypto');
  const data = Buffer.from('eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImF1ZCI6Imh0dHBzOi8vYXBpLmV4YW1wbGUudGVzdCJ9');
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const rate = async (op: () => unknown): Promise<number> => {
    for (let i = 0; i < 300; i++) await op();
    let count = 0;
    const started = performance.now();
    while (performance.now() - started < 1500) {
      await op();
      count++;
    }
    return count / ((performance.now() - started) / 1000);
  };
  const signature = sign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' });
  const subtle = webcrypto.subtle;
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const webPrivate = await subtle.importKey('jwk', privateKey.export({ format: 'jwk' }), algorithm, false, ['sign']);
  const webPublic = await subtle.importKey('jwk', publicKey.export({ format: 'jwk' }), algorithm, false, ['verify']);
  const result: CryptoRates = {
    nodeSign: await rate(() => sign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' })),
    nodeVerify: await rate(() => verify('sha256', data, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature)),
    webSign: await rate(() => subtle.sign(algorithm, webPrivate, data)),
    webVerify: await rate(() => subtle.verify(algorithm, webPublic, signature, data)),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

async function koaChild(): Promise<void> {
  const { default: Koa } = await import('koa');
  const app = new Koa();
  app.use((ctx) => {
    ctx.body = {};
  });
  const server = app.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${(server.address() as { port: number }).port}` })}\n`));
}

if (process.argv[1] === SELF) {
  const role = process.argv[2];
  void (role === 'crypto' ? cryptoChild() : role === 'koa' ? koaChild() : Promise.reject(new Error(`unknown reference ${role}`)));
}
