import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';

/** What CI installs (see README): the version these tests were written against. */
export const MOTO_INSTALL = "python3 -m pip install 'moto[server]==5.2.1'";

export interface AwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

/** How to start moto's server here: `moto_server` on PATH, else `python3 -m moto.server`. Undefined when neither works. */
export function findMoto(): readonly [string, ...string[]] | undefined {
  for (const command of [['moto_server'], ['python3', '-m', 'moto.server']] as const) {
    const probe = spawnSync(command[0], [...command.slice(1), '--help'], { stdio: 'ignore', timeout: 30_000 });
    if (probe.status === 0) return command;
  }
  return undefined;
}

/**
 * The moto command, or undefined (tests skip) when moto is missing. With `TESSERA_REQUIRE_MOTO=1`, a missing
 * moto is an error: CI must not pass by skipping the only tests that speak real STS protocol.
 */
export function requireMotoOrSkip(): readonly [string, ...string[]] | undefined {
  const command = findMoto();
  if (!command && process.env.TESSERA_REQUIRE_MOTO === '1') {
    throw new Error(`TESSERA_REQUIRE_MOTO=1 but moto's server is not installed (neither moto_server nor python3 -m moto.server runs): ${MOTO_INSTALL}`);
  }
  return command;
}

export const MOTO_SKIP_REASON = `moto is not installed (${MOTO_INSTALL}); set TESSERA_REQUIRE_MOTO=1 to make this a failure`;

/** The account moto puts everything in unless told otherwise. */
export const MOTO_ACCOUNT = '123456789012';

/** Any credentials do while moto does not check signatures (before `verifySignatures()`). */
const BOOTSTRAP: AwsCredentials = { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'bootstrap' };

/** A moto server on loopback, started for one test file: real STS protocol (XML, SigV4, error shapes). */
export class MotoServer {
  private constructor(
    private readonly child: ChildProcess,
    readonly url: string,
  ) {}

  static async start(command: readonly [string, ...string[]]): Promise<MotoServer> {
    // Signature checks start off (set-up calls use made-up keys) and are switched on by verifySignatures().
    const env = { ...process.env };
    delete env.INITIAL_NO_AUTH_ACTION_COUNT;
    const child = spawn(command[0], [...command.slice(1), '-H', '127.0.0.1', '-p', '0'], { stdio: ['ignore', 'pipe', 'pipe'], env });
    const url = await new Promise<string>((resolve, reject) => {
      let output = '';
      const timer = setTimeout(() => fail(new Error(`moto did not start in 30 s: ${output.slice(-500)}`)), 30_000);
      const fail = (error: Error) => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(error);
      };
      const read = (chunk: Buffer) => {
        output += chunk.toString();
        const match = /Running on (http:\/\/127\.0\.0\.1:\d+)/.exec(output);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]!);
        }
      };
      child.stdout!.on('data', read);
      child.stderr!.on('data', read);
      child.once('error', fail);
      child.once('exit', (code) => fail(new Error(`moto exited (${code}): ${output.slice(-500)}`)));
    });
    // Keep draining its request log so the pipe never fills and blocks it.
    child.stdout!.resume();
    child.stderr!.resume();
    return new MotoServer(child, url);
  }

  /** Signs and sends a Query API call as an SDK would; returns status and XML. */
  async call(service: 'iam' | 'sts', params: Record<string, string>, credentials: AwsCredentials = BOOTSTRAP): Promise<{ status: number; text: string }> {
    const url = new URL(this.url);
    const body = new URLSearchParams(params).toString();
    const request = new HttpRequest({
      method: 'POST',
      protocol: url.protocol,
      hostname: url.hostname,
      port: Number(url.port),
      path: '/',
      headers: { host: url.host, 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' },
      body,
    });
    const signed = await new SignatureV4({ credentials, region: 'us-east-1', service, sha256: Sha256 }).sign(request);
    const { host: _host, ...headers } = signed.headers;
    const response = await fetch(`${this.url}/`, { method: 'POST', headers, body });
    return { status: response.status, text: await response.text() };
  }

  /** Creates a role (with a path, as real roles often have) and assumes it: temporary credentials for an assumed-role ARN. */
  async assumeRole(options: { account?: string; roleName: string; path?: string; sessionName: string }): Promise<AwsCredentials> {
    const account = options.account ?? MOTO_ACCOUNT;
    const path = options.path ?? '/';
    if (account === MOTO_ACCOUNT) {
      const trust = JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Principal: { AWS: '*' }, Action: 'sts:AssumeRole' }] });
      const created = await this.call('iam', { Action: 'CreateRole', Version: '2010-05-08', RoleName: options.roleName, Path: path, AssumeRolePolicyDocument: trust });
      if (created.status !== 200 && !created.text.includes('EntityAlreadyExists')) throw new Error(`moto CreateRole: ${created.status} ${created.text}`);
    }
    const assumed = await this.call('sts', {
      Action: 'AssumeRole',
      Version: '2011-06-15',
      RoleArn: `arn:aws:iam::${account}:role${path}${options.roleName}`,
      RoleSessionName: options.sessionName,
    });
    if (assumed.status !== 200) throw new Error(`moto AssumeRole: ${assumed.status} ${assumed.text}`);
    const field = (name: string) => new RegExp(`<${name}>([^<]*)</${name}>`).exec(assumed.text)?.[1] ?? '';
    return { accessKeyId: field('AccessKeyId'), secretAccessKey: field('SecretAccessKey'), sessionToken: field('SessionToken') };
  }

  /** Creates an IAM user with an access key (long-lived credentials). */
  async createUser(userName: string, path = '/'): Promise<AwsCredentials> {
    const created = await this.call('iam', { Action: 'CreateUser', Version: '2010-05-08', UserName: userName, Path: path });
    if (created.status !== 200) throw new Error(`moto CreateUser: ${created.status} ${created.text}`);
    const key = await this.call('iam', { Action: 'CreateAccessKey', Version: '2010-05-08', UserName: userName });
    const field = (name: string) => new RegExp(`<${name}>([^<]*)</${name}>`).exec(key.text)?.[1] ?? '';
    return { accessKeyId: field('AccessKeyId'), secretAccessKey: field('SecretAccessKey') };
  }

  /**
   * From now on moto verifies every SigV4 signature (its IAM authentication mode), as STS does: a tampered
   * or wrongly keyed proof gets a real `SignatureDoesNotMatch` / `InvalidClientTokenId` answer.
   */
  async verifySignatures(): Promise<void> {
    const response = await fetch(`${this.url}/moto-api/reset-auth`, { method: 'POST', body: '0' });
    if (response.status !== 200) throw new Error(`moto reset-auth: ${response.status}`);
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    await exited;
  }
}
