import { mkdtemp } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { createBroker, loadConfigFile, MemoryAuditSink, silentLogger, type Broker } from '@tessera/core';
import { runDemo } from '../src/demo.js';

const REPO = resolve(import.meta.dirname, '../..');

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address() as { port: number };
  await new Promise<void>((done) => server.close(() => done()));
  return port;
}

let broker: Broker | undefined;
afterAll(async () => broker?.close());

it('config/dev.yaml runs the demo exchange end to end (what README step 1 shows)', async () => {
  const [brokerPort, idpPort] = [await freePort(), await freePort()];
  const issuer = `http://127.0.0.1:${brokerPort}`;
  const loaded = await loadConfigFile(join(REPO, 'config/dev.yaml'), { TESSERA_ISSUER: issuer, DEV_IDP_URL: `http://127.0.0.1:${idpPort}` });
  const dataDir = await mkdtemp(join(tmpdir(), 'tessera-dev-'));
  const audit = new MemoryAuditSink();
  broker = await createBroker({ ...loaded.config, dataDir }, { baseDir: loaded.baseDir, logger: silentLogger, audit });
  await broker.listen({ port: brokerPort });

  const lines: string[] = [];
  const claims = await runDemo({ brokerUrl: issuer, idpPort, dataDir, out: (line) => lines.push(line) });
  expect(claims).toMatchObject({ iss: issuer, sub: 'alice', aud: 'https://api.example.test', client_id: 'demo-client', scope: 'read' });
  expect(lines.at(-1)).toMatch(/^verified/);
  expect(audit.records).toMatchObject([{ decision: 'allow', ruleId: 'dev-idp-users-to-demo-api' }]);
});
