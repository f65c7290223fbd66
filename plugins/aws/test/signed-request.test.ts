import { describe, expect, it } from 'vitest';
import { InvalidToken, type TokenRejection } from '@tessera/plugin-sdk';
import { awsConfigSchema } from '../src/index.js';
import { allowedEndpoints } from '../src/config.js';
import { checkProof, type ProofCheckOptions } from '../src/signed-request.js';
import { decodeProof, encodeEnvelope, signEnvelope, signProof, type ProofOptions } from './proof.js';

// Everything here runs without any network: these are the checks the broker makes before STS sees a
// byte, so they must hold even though moto (and a careless STS client) would accept any signature.

const BROKER = 'https://broker.example.test';
const GLOBAL = 'https://sts.amazonaws.com';
const credentials = { accessKeyId: 'ASIAEXAMPLEEXAMPLE12', secretAccessKey: 'secret', sessionToken: 'session-token' };
const config = awsConfigSchema.parse({
  accounts: ['123456789012'],
  regions: ['eu-west-1', 'cn-north-1'],
  endpoints: [{ url: 'http://127.0.0.1:4566', region: 'us-east-1' }],
});
const options = (overrides: Partial<ProofCheckOptions> = {}): ProofCheckOptions => ({
  endpoints: allowedEndpoints(config),
  audienceHeader: 'x-tessera-audience',
  audiences: new Set([BROKER, `${BROKER}/token`]),
  maxAgeSeconds: 300,
  clockSkewSeconds: 60,
  maxTokenBytes: 16_384,
  now: new Date(),
  ...overrides,
});
const sign = (overrides: Partial<ProofOptions> = {}) => signProof({ credentials, endpoint: GLOBAL, audience: BROKER, ...overrides });

/** checkProof refuses with this reason, and its detail carries nothing of the token. */
function expectRefused(token: string, reason: TokenRejection, detail?: RegExp, checkOptions = options()): void {
  let caught: unknown;
  try {
    checkProof(token, checkOptions);
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(InvalidToken);
  expect((caught as InvalidToken).reason).toBe(reason);
  if (detail) expect((caught as InvalidToken).detail).toMatch(detail);
  expect((caught as InvalidToken).description).toBe('token is invalid');
}

/** Re-encodes a proof after changing its envelope (the signature no longer covers the change, if it ever did). */
function alter(token: string, change: (envelope: ReturnType<typeof decodeProof>) => void): string {
  const envelope = decodeProof(token);
  change(envelope);
  return encodeEnvelope(envelope);
}

describe('a proof signed as the README shows', () => {
  it('passes the local checks and keeps exactly what was signed', async () => {
    const envelope = await signEnvelope({ credentials, endpoint: GLOBAL, audience: BROKER });
    const proof = checkProof(encodeEnvelope(envelope), options());
    expect(proof.endpoint).toMatchObject({ origin: GLOBAL, host: 'sts.amazonaws.com', region: 'us-east-1', partition: 'aws' });
    expect(proof.audience).toBe(BROKER);
    expect(proof.body).toBe('Action=GetCallerIdentity&Version=2011-06-15');
    expect(proof.signature).toMatch(/^[0-9a-f]{64}$/);
    // Everything but the derived host is forwarded verbatim.
    const { host, ...rest } = envelope.headers;
    expect(host).toBe('sts.amazonaws.com');
    expect(Object.fromEntries(proof.headers)).toEqual(rest);
  });

  it('accepts regional endpoints from the config, China regions under .com.cn, signed for their own region', async () => {
    expect(checkProof(await sign({ endpoint: 'https://sts.eu-west-1.amazonaws.com', region: 'eu-west-1' }), options()).endpoint.region).toBe('eu-west-1');
    expect(checkProof(await sign({ endpoint: 'https://sts.cn-north-1.amazonaws.com.cn', region: 'cn-north-1' }), options()).endpoint.partition).toBe('aws-cn');
  });

  it('accepts the token endpoint as audience, and header values in Vault array form', async () => {
    expect(checkProof(await sign({ audience: `${BROKER}/token` }), options()).audience).toBe(`${BROKER}/token`);
    const vaultStyle = alter(await sign(), (envelope) => {
      for (const [name, value] of Object.entries(envelope.headers)) (envelope.headers as Record<string, unknown>)[name] = [value];
    });
    expect(checkProof(vaultStyle, options()).audience).toBe(BROKER);
  });
});

describe('where a proof may be sent', () => {
  it('refuses any host but the configured STS endpoints', async () => {
    for (const endpoint of ['https://sts.us-west-2.amazonaws.com', 'https://sts.amazonaws.com.evil.test', 'https://evil.test', 'https://169.254.169.254']) {
      expectRefused(await sign({ endpoint }), 'untrusted_issuer', /not an allowed STS endpoint/);
    }
  });

  it('refuses plain http to STS, and any other port of a configured loopback endpoint', async () => {
    expectRefused(await sign({ endpoint: 'http://sts.amazonaws.com' }), 'untrusted_issuer');
    expectRefused(await sign({ endpoint: 'http://127.0.0.1:4567' }), 'untrusted_issuer');
    expect(checkProof(await sign({ endpoint: 'http://127.0.0.1:4566' }), options()).endpoint.origin).toBe('http://127.0.0.1:4566');
  });

  it('requires the URL to be exactly the endpoint origin and /', async () => {
    const token = await sign();
    for (const url of [
      'https://sts.amazonaws.com/?Action=AssumeRole',
      'https://sts.amazonaws.com/?',
      'https://sts.amazonaws.com/#x',
      'https://sts.amazonaws.com/other',
      'https://sts.amazonaws.com',
      'https://STS.amazonaws.com/',
      'https://sts.amazonaws.com:443/',
      'https://user@sts.amazonaws.com/',
    ]) {
      expectRefused(alter(token, (envelope) => void ((envelope as { url: string }).url = url)), 'malformed', /url/);
    }
    expectRefused(alter(token, (envelope) => void ((envelope as { url: string }).url = 'not a url')), 'malformed', /url/);
  });

  it('refuses a Host header that differs from the URL', async () => {
    expectRefused(await sign({ headers: { host: 'sts.eu-west-1.amazonaws.com' } }), 'malformed', /host header/);
    // SigV4 signs the value as written; the HTTP client would send another spelling.
    expectRefused(await sign({ headers: { host: 'STS.amazonaws.com' } }), 'malformed', /host header/);
    expectRefused(await sign({ headers: { host: 'sts.amazonaws.com:443' } }), 'malformed', /host header/);
  });
});

describe('what a proof may ask STS', () => {
  it('refuses any method but POST', async () => {
    expectRefused(alter(await sign(), (envelope) => void ((envelope as { method: string }).method = 'GET')), 'malformed', /POST/);
  });

  it('refuses any action but GetCallerIdentity, any extra parameter, and repeats, even when signed', async () => {
    for (const body of [
      'Action=AssumeRole&Version=2011-06-15',
      'Action=GetCallerIdentity&Version=2011-06-15&RoleArn=arn:aws:iam::123456789012:role/admin',
      'Action=GetCallerIdentity&Action=AssumeRole&Version=2011-06-15',
      'Action=GetCallerIdentity&Version=2011-06-15&Version=2011-06-15',
      'Action=GetCallerIdentity',
      'Action=GetCallerIdentity&Version=2099-01-01',
      'Action=GetCallerIdentity%26Version%3D2011-06-15',
      'Action=GetCallerIdentity&Version=2011-06-15&',
      '',
    ]) {
      expectRefused(await sign({ body }), 'malformed', /body/);
    }
    // Version first is as good as Action first.
    expect(checkProof(await sign({ body: 'Version=2011-06-15&Action=GetCallerIdentity' }), options()).body).toBe('Version=2011-06-15&Action=GetCallerIdentity');
  });

  it('requires a form content type and a content-length that matches the body', async () => {
    expectRefused(await sign({ headers: { 'content-type': 'application/json' } }), 'malformed', /content-type/);
    expectRefused(await sign({ headers: { 'content-length': '999' } }), 'malformed', /content-length/);
    expect(checkProof(await sign({ headers: { 'content-length': '43' } }), options()).headers.has('content-length')).toBe(false);
  });
});

describe('headers', () => {
  it('refuses duplicates, whether by case or by array', async () => {
    const token = await sign();
    expectRefused(alter(token, (envelope) => void (envelope.headers['X-Amz-Date'] = envelope.headers['x-amz-date']!)), 'malformed', /duplicate header x-amz-date/);
    expectRefused(
      alter(token, (envelope) => void ((envelope.headers as Record<string, unknown>)['x-tessera-audience'] = [BROKER, 'https://other.example.test'])),
      'malformed',
      /duplicate header x-tessera-audience/,
    );
    expectRefused(alter(token, (envelope) => void ((envelope.headers as Record<string, unknown>)['x-amz-date'] = [])), 'malformed', /duplicate/);
  });

  it('refuses hop-by-hop headers, even signed ones', async () => {
    for (const name of ['connection', 'transfer-encoding', 'te', 'upgrade', 'proxy-authorization', 'expect']) {
      expectRefused(await sign({ headers: { [name]: 'x' } }), 'malformed', new RegExp(`hop-by-hop header ${name}`));
    }
  });

  it('refuses headers outside the allow-list, x-amz-* included, without naming them', async () => {
    for (const name of ['x-forwarded-for', 'x-amz-target', 'x-amz-signedheaders', 'accept', 'cookie', 'x-vault-aws-iam-server-id']) {
      expectRefused(await sign({ headers: { [name]: 'x' } }), 'malformed', /^malformed: header not allowed$/);
    }
  });

  it('refuses control characters and bad names', async () => {
    const token = await sign();
    expectRefused(alter(token, (envelope) => void (envelope.headers['user-agent'] = 'a\r\nx-amz-target: b')), 'malformed', /header value user-agent/);
    expectRefused(alter(token, (envelope) => void (envelope.headers['bad name'] = 'x')), 'malformed', /header name/);
  });
});

describe('the audience binding', () => {
  it('refuses a proof without the audience header', async () => {
    expectRefused(await sign({ audience: undefined }), 'audience', /x-tessera-audience is not signed/);
  });

  it('refuses an audience header added after signing', async () => {
    const unsigned = alter(await sign({ audience: undefined }), (envelope) => void (envelope.headers['x-tessera-audience'] = BROKER));
    expectRefused(unsigned, 'audience', /not signed/);
  });

  it('refuses a proof made for another broker, or a prefix, suffix or case variant of this one', async () => {
    for (const audience of ['https://other.example.test', 'https://broker.example.test.evil', 'https://broker.example', 'HTTPS://BROKER.EXAMPLE.TEST', `${BROKER}/`, '']) {
      expectRefused(await sign({ audience }), 'audience', /does not name this broker/);
    }
  });

  it('follows the configured header name, and needs it signed', async () => {
    const vault = options({ audienceHeader: 'x-vault-aws-iam-server-id' });
    expect(checkProof(await sign({ audienceHeader: 'x-vault-aws-iam-server-id' }), vault).audience).toBe(BROKER);
    expectRefused(await sign(), 'malformed', /header not allowed/, vault);
  });

  it('cannot be renamed to a header with a meaning of its own', () => {
    for (const audienceHeader of ['authorization', 'host', 'x-amz-date', 'content-type', 'X-Upper']) {
      expect(awsConfigSchema.safeParse({ accounts: ['123456789012'], audienceHeader }).success, audienceHeader).toBe(false);
    }
  });
});

describe('freshness', () => {
  it('accepts a proof up to maxAgeSeconds old, and refuses it after', async () => {
    const now = new Date();
    const signedAt = new Date(now.getTime() - 299_000);
    expect(checkProof(await sign({ signingDate: signedAt }), options({ now })).signedAt.getTime()).toBe(Math.floor(signedAt.getTime() / 1000) * 1000);
    expectRefused(await sign({ signingDate: new Date(now.getTime() - 301_000) }), 'expired', /x-amz-date too old/, options({ now }));
  });

  it('tolerates clock skew into the future, and no more', async () => {
    const now = new Date();
    expect(checkProof(await sign({ signingDate: new Date(now.getTime() + 50_000) }), options({ now })).audience).toBe(BROKER);
    expectRefused(await sign({ signingDate: new Date(now.getTime() + 120_000) }), 'not_yet_valid', undefined, options({ now }));
  });

  it('refuses an X-Amz-Date that is unsigned, malformed, impossible, or not the credential scope date', async () => {
    const token = await sign();
    expectRefused(
      alter(token, (envelope) => void (envelope.headers.authorization = envelope.headers.authorization!.replace(';x-amz-date', ''))),
      'signature',
      /x-amz-date is not signed/,
    );
    expectRefused(alter(token, (envelope) => void (envelope.headers['x-amz-date'] = '2026-01-01T00:00:00Z')), 'malformed', /x-amz-date/);
    expectRefused(alter(token, (envelope) => void (envelope.headers['x-amz-date'] = '20260231T000000Z')), 'malformed', /x-amz-date/);
    const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10).replaceAll('-', '');
    expectRefused(
      alter(token, (envelope) => void (envelope.headers.authorization = envelope.headers.authorization!.replace(/\/\d{8}\//, `/${tomorrow}/`))),
      'signature',
      /scope date/,
    );
  });
});

describe('the SigV4 Authorization header', () => {
  it('must be AWS4-HMAC-SHA256 with one credential, signed-header list and signature', async () => {
    const token = await sign();
    const edit = (change: (authorization: string) => string) => alter(token, (envelope) => void (envelope.headers.authorization = change(envelope.headers.authorization!)));
    expectRefused(edit((value) => value.replace('AWS4-HMAC-SHA256', 'AWS4-ECDSA-P256-SHA256')), 'malformed', /SigV4/);
    expectRefused(edit((value) => `${value}, Signature=${'0'.repeat(64)}`), 'malformed', /SigV4/);
    expectRefused(edit(() => 'Bearer abc'), 'malformed', /SigV4/);
    expectRefused(alter(token, (envelope) => void delete envelope.headers.authorization), 'malformed', /SigV4/);
  });

  it('must be scoped to sts in the endpoint region', async () => {
    expectRefused(await sign({ region: 'eu-west-1' }), 'signature', /region/);
    const iam = alter(await sign(), (envelope) => void (envelope.headers.authorization = envelope.headers.authorization!.replace('/sts/', '/iam/')));
    expectRefused(iam, 'signature', /not sts/);
  });

  it('lists signed headers sorted, unique, and present', async () => {
    const token = await sign();
    const signed = (change: (list: string) => string) =>
      alter(token, (envelope) => void (envelope.headers.authorization = envelope.headers.authorization!.replace(/SignedHeaders=([^,]+)/, (_all, list: string) => `SignedHeaders=${change(list)}`)));
    expectRefused(signed((list) => list.split(';').reverse().join(';')), 'malformed', /sorted/);
    expectRefused(signed((list) => `${list};x-tessera-audience`.split(';').sort().join(';')), 'malformed', /sorted/);
    expectRefused(signed((list) => `${list};zz-missing`), 'malformed', /signed header is missing/);
    expectRefused(signed((list) => list.replace('host;', '')), 'signature', /host is not signed/);
  });
});

describe('the envelope', () => {
  it('refuses oversize tokens before decoding them', () => {
    expectRefused('A'.repeat(16_385), 'too_large');
  });

  it('refuses anything but canonical base64url of a strict {method, url, headers, body} object', async () => {
    const token = await sign();
    for (const garbage of [
      `${token}=`,
      `+${token.slice(1)}`,
      `${token.slice(0, -1)}.`,
      Buffer.from('not json').toString('base64url'),
      encodeEnvelope([1, 2]),
      encodeEnvelope({ ...decodeProof(token), extra: true }),
      encodeEnvelope({ ...decodeProof(token), body: 'A'.repeat(300) }),
      encodeEnvelope({ ...decodeProof(token), headers: 'authorization' }),
      Buffer.from([0xff, 0xfe, 0x7b]).toString('base64url'),
    ]) {
      expectRefused(garbage, 'malformed');
    }
  });

  it('refuses a second spelling of the same bytes', () => {
    // 7 bytes encode to 10 characters whose last one carries 4 unused bits: flip one of them.
    const canonical = Buffer.from('{"a":1}').toString('base64url');
    const last = canonical.at(-1)!;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const twin = canonical.slice(0, -1) + alphabet[alphabet.indexOf(last) + 1];
    expect(Buffer.from(twin, 'base64url').equals(Buffer.from(canonical, 'base64url'))).toBe(true);
    expectRefused(twin, 'malformed', /canonical/);
  });
});
