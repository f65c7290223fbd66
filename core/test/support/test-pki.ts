import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface IssuedCert {
  readonly certPem: string;
  readonly keyPem: string;
  /** SHA-256 fingerprint as Node's `X509Certificate.fingerprint256` prints it. */
  readonly fingerprint: string;
}

/** A throwaway CA made with `openssl`, issuing P-256 server certificates for 127.0.0.1 and localhost. */
export class TestPki {
  private serial = 1;

  private constructor(
    readonly dir: string,
    readonly caPem: string,
  ) {}

  static async create(name = 'Tessera test CA'): Promise<TestPki> {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-pki-'));
    await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', `/CN=${name}`,
      '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.pem'), '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
    return new TestPki(dir, await readFile(join(dir, 'ca.pem'), 'utf8'));
  }

  /** A server certificate signed by this CA. */
  async issue(options: { cn?: string } = {}): Promise<IssuedCert> {
    const base = join(this.dir, `leaf-${this.serial++}`);
    const ext = `${base}.ext`;
    await writeFile(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
    await run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${options.cn ?? 'localhost'}`, '-keyout', `${base}.key`, '-out', `${base}.csr`]);
    await run('openssl', ['x509', '-req', '-in', `${base}.csr`, '-CA', join(this.dir, 'ca.pem'), '-CAkey', join(this.dir, 'ca.key'), '-set_serial', String(this.serial * 1000 + Date.now() % 1000), '-days', '1', '-extfile', ext, '-out', `${base}.pem`]);
    const certPem = await readFile(`${base}.pem`, 'utf8');
    return { certPem, keyPem: await readFile(`${base}.key`, 'utf8'), fingerprint: new X509Certificate(certPem).fingerprint256 };
  }
}
