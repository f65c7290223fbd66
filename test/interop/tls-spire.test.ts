import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { request } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mkdtemp } from 'node:fs/promises';
import { connect, type PeerCertificate, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createBroker, MemoryAuditSink, silentLogger, validateConfig, type Broker, type RunningServer } from '@tessera/core';
import { spireRequired, spireUnavailableReason, startSpire, type Spire } from '../src/spire.js';

const unavailable = spireUnavailableReason();
/** Short enough that the agent rotates it (at about half its life) within the test. */
const SVID_TTL_SECONDS = 20;

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 200));
  }
}

/** The broker's listener over the SPIRE-served X.509-SVID, as the `listen.tls.spiffe` docs describe. */
describe('listen.tls.spiffe against SPIRE', () => {
  let spire: Spire;
  let broker: Broker;
  let running: RunningServer;
  let probe: Server;
  let bundlePem: string;
  let tlsId: string;

  beforeAll(async () => {
    if (unavailable) return;
    spire = await startSpire();
    tlsId = `spiffe://${spire.trustDomain}/tessera-listener`;
    bundlePem = await readFile(join(spire.dir, 'bundle.pem'), 'utf8');
    // The listener's SPIFFE ID has no entry yet: the broker starts waiting for it.
    const config = validateConfig({
      issuer: 'https://127.0.0.1:8443',
      dataDir: await mkdtemp(join(tmpdir(), 'tessera-tls-spire-')),
      keys: { generate: true },
      listen: { tls: { spiffe: { socket: `unix://${spire.workloadSocket}`, spiffeId: tlsId } } },
    });
    broker = await createBroker(config, { logger: silentLogger, audit: new MemoryAuditSink() });
    running = await broker.listen({ host: '127.0.0.1', port: 0 });
    // /readyz asked over plain HTTP too, since without a certificate the TLS listener cannot answer.
    probe = createServer(broker.app.callback());
    await new Promise<void>((done) => probe.listen(0, '127.0.0.1', done));
  }, 180_000);
  afterAll(async () => {
    probe?.closeAllConnections();
    await new Promise((done) => (probe ? probe.close(done) : done(undefined)));
    await broker?.close();
    await spire?.stop();
  }, 60_000);
  beforeEach((ctx) => {
    if (unavailable && spireRequired()) throw new Error(`TESSERA_REQUIRE_SPIRE=1 but ${unavailable}`);
    if (unavailable) ctx.skip(unavailable);
  });

  const port = () => Number(new URL(running.url).port);
  /** SPIFFE X.509-SVID verification: the chain ends at the trust bundle and the URI SAN is the expected ID (no host name). */
  const verifySpiffeId = (_host: string, cert: PeerCertificate) => (cert.subjectaltname === `URI:${tlsId}` ? undefined : new Error(`unexpected SAN ${cert.subjectaltname}`));
  const open = () =>
    new Promise<TLSSocket>((done, fail) => {
      const socket = connect({ host: '127.0.0.1', port: port(), ca: bundlePem, checkServerIdentity: verifySpiffeId }, () => done(socket));
      socket.once('error', fail);
    });
  const servedSerial = async () => {
    const socket = await open();
    const serial = socket.getPeerX509Certificate()!.serialNumber;
    socket.destroy();
    return serial;
  };
  const readyz = async () => {
    const response = await fetch(`http://127.0.0.1:${(probe.address() as AddressInfo).port}/readyz`);
    return { status: response.status, body: (await response.json()) as { checks?: Record<string, string> } };
  };

  it('is not ready, and completes no handshake, until the first X.509-SVID arrives', async () => {
    expect(running.url).toMatch(/^https:\/\//);
    expect(await readyz()).toMatchObject({ status: 503, body: { checks: { tls: 'waiting for the first X.509-SVID from the Workload API' } } });
    await expect(servedSerial()).rejects.toThrow();

    await spire.createEntry(tlsId, [`unix:gid:${process.getgid!()}`], { x509SvidTtlSeconds: SVID_TTL_SECONDS });
    await until('readiness', async () => (await readyz()).status === 200, 30_000);
    expect((await readyz()).body.checks).toMatchObject({ tls: 'ok' });
  }, 60_000);

  it('serves its SVID to a client that verifies the chain against the SPIRE bundle and the SPIFFE ID', async () => {
    const socket = await open();
    const leaf = socket.getPeerX509Certificate()!;
    socket.destroy();
    expect(leaf.subjectAltName).toBe(`URI:${tlsId}`);
    const lifetimeSeconds = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 1000;
    expect(lifetimeSeconds).toBeLessThanOrEqual(SVID_TTL_SECONDS + 60);
    const status = await new Promise<number>((done, fail) => {
      const req = request(`${running.url}/readyz`, { ca: bundlePem, checkServerIdentity: verifySpiffeId, agent: false }, (res) => {
        res.resume();
        done(res.statusCode ?? 0);
      });
      req.once('error', fail);
      req.end();
    });
    expect(status).toBe(200);
    // A client expecting another identity refuses the broker.
    await expect(
      new Promise((done, fail) => {
        const socket = connect({ host: '127.0.0.1', port: port(), ca: bundlePem, checkServerIdentity: () => new Error('not the expected SPIFFE ID') }, () => done(socket));
        socket.once('error', fail);
      }),
    ).rejects.toThrow('not the expected SPIFFE ID');
  });

  it('serves the rotated SVID to new connections as the agent rotates it, without a restart', async () => {
    const before = await servedSerial();
    await until('a rotated X.509-SVID', async () => (await servedSerial()) !== before, (SVID_TTL_SECONDS + 15) * 1000);
    const socket = await open();
    expect(socket.getPeerX509Certificate()!.subjectAltName).toBe(`URI:${tlsId}`);
    socket.destroy();
    expect((await readyz()).status).toBe(200);
  }, 60_000);
});
