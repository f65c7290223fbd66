/**
 * `npm run demo`: one real token exchange against a broker started with `npm start` (config/dev.yaml).
 * Plays the two outside parties the dev config trusts, on loopback: the identity provider that issues the
 * subject's ID token, and the client that authenticates with private_key_jwt.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify, SignJWT } from 'jose';
import { LoopbackIssuer, persistentTestKey } from '@tessera/plugin-testkit';

export interface DemoOptions {
  readonly brokerUrl: string;
  readonly idpPort: number;
  readonly dataDir: string;
  readonly audience?: string;
  readonly out?: (line: string) => void;
}

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
const ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const JWT_BEARER_ASSERTION = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

export async function runDemo(options: DemoOptions): Promise<Record<string, unknown>> {
  const out = options.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  const audience = options.audience ?? 'https://api.example.test';
  // Kept on disk so the broker's cached keys stay valid across demo runs.
  const idpKey = await persistentTestKey(join(options.dataDir, 'demo', 'idp-key.json'));
  const clientKey = await persistentTestKey(join(options.dataDir, 'demo', 'client-key.json'));
  const idp = await LoopbackIssuer.start({
    path: '/dev-idp',
    port: options.idpPort,
    key: idpKey,
    routes: { '/client/jwks': () => ({ keys: [clientKey.publicJwk] }) },
  });
  try {
    const metadataResponse = await fetch(`${options.brokerUrl}/.well-known/oauth-authorization-server`);
    if (!metadataResponse.ok) throw new Error(`broker metadata: HTTP ${metadataResponse.status} (is \`npm start\` running?)`);
    const metadata = (await metadataResponse.json()) as { issuer: string; token_endpoint: string; jwks_uri: string };
    out(`broker     ${metadata.issuer}  (token endpoint ${metadata.token_endpoint})`);

    const idToken = await idp.mint({ sub: 'alice', email: 'alice@example.test', aud: metadata.issuer });
    out(`subject    ID token for "alice" from ${idp.issuer}`);
    const now = Math.floor(Date.now() / 1000);
    const clientAssertion = await new SignJWT({ jti: randomUUID() })
      .setProtectedHeader({ alg: clientKey.alg, kid: clientKey.kid, typ: 'JWT' })
      .setIssuer('demo-client')
      .setSubject('demo-client')
      .setAudience(metadata.issuer)
      .setIssuedAt(now)
      .setExpirationTime(now + 60)
      .sign(clientKey.privateKey);

    const response = await fetch(metadata.token_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: TOKEN_EXCHANGE,
        subject_token: idToken,
        subject_token_type: ID_TOKEN,
        requested_token_type: ACCESS_TOKEN,
        audience,
        scope: 'read',
        client_assertion_type: JWT_BEARER_ASSERTION,
        client_assertion: clientAssertion,
      }),
    });
    const body = (await response.json()) as Record<string, unknown>;
    if (!response.ok) throw new Error(`exchange refused: HTTP ${response.status} ${JSON.stringify(body)}`);
    const accessToken = body.access_token as string;
    out(`exchange   HTTP ${response.status}, issued_token_type ${String(body.issued_token_type)}, expires_in ${String(body.expires_in)}s`);

    const verified = await jwtVerify(accessToken, createRemoteJWKSet(new URL(metadata.jwks_uri)), {
      issuer: metadata.issuer,
      audience,
      typ: 'at+jwt',
    });
    out(`header     ${JSON.stringify(decodeProtectedHeader(accessToken))}`);
    out(`claims     ${JSON.stringify(verified.payload, null, 2).replace(/\n/g, '\n           ')}`);
    out(`verified   signature checked against ${metadata.jwks_uri}`);
    return verified.payload as Record<string, unknown>;
  } finally {
    await idp.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { broker: { type: 'string' }, 'idp-port': { type: 'string' }, 'data-dir': { type: 'string' } } });
  runDemo({
    brokerUrl: values.broker ?? process.env.TESSERA_ISSUER ?? 'http://127.0.0.1:8080',
    idpPort: Number(values['idp-port'] ?? 8081),
    dataDir: values['data-dir'] ?? '.tessera',
  }).catch((error: unknown) => {
    process.stderr.write(`demo failed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
