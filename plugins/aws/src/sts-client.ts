import { XMLParser } from 'fast-xml-parser';
import { InvalidToken, TemporarilyUnavailable } from '@tessera/plugin-sdk';
import type { CheckedProof } from './signed-request.js';

/** What STS says about the signer of the request. */
export interface CallerIdentity {
  readonly account: string;
  readonly arn: string;
  readonly userId: string;
}

export interface StsCallOptions {
  /** The broker's validation budget. */
  readonly signal: AbortSignal;
  readonly timeoutMs: number;
}

/** A GetCallerIdentity answer is about 500 bytes; errors are smaller still. */
const MAX_RESPONSE_BYTES = 16_384;
/** STS error codes that mean "not now", not "not you". */
const RETRYABLE_CODES = new Set(['Throttling', 'ThrottlingException', 'RequestLimitExceeded', 'ServiceUnavailable', 'InternalFailure']);
const EXPIRED_CODES = new Set(['ExpiredToken', 'ExpiredTokenException', 'RequestExpired']);
const ERROR_CODE = /^[A-Za-z][A-Za-z0-9.]{0,63}$/;

const xml = new XMLParser({
  ignoreAttributes: true,
  removeNSPrefix: true,
  ignoreDeclaration: true,
  ignorePiTags: true,
  // Account ids have leading zeros: keep every value a string.
  parseTagValue: false,
  processEntities: false,
  htmlEntities: false,
  trimValues: true,
  maxNestedTags: 8,
});

/**
 * Sends the checked proof, unchanged, to the endpoint it was signed for, and reads STS's verdict.
 *
 * Not the SDK's `HttpFetcher`: that only GETs JSON, and a proof is a POST whose exact headers and body
 * are signed, answered in XML. The call keeps the fetcher's guarantees by hand: the destination comes
 * from the operator's allow-list (never from the token), plain HTTP only to a configured loopback test
 * endpoint, no redirects (a 3xx could bounce the signed request elsewhere), a time bound tied to the
 * validation budget, and a cap on what is read back.
 */
export async function getCallerIdentity(proof: CheckedProof, options: StsCallOptions): Promise<CallerIdentity> {
  const timeout = AbortSignal.timeout(options.timeoutMs);
  const signal = AbortSignal.any([options.signal, timeout]);
  let response: Response;
  let text: string;
  try {
    response = await fetch(`${proof.endpoint.origin}/`, {
      method: 'POST',
      headers: [...proof.headers],
      body: proof.body,
      redirect: 'manual',
      signal,
    });
    text = await readCapped(response, MAX_RESPONSE_BYTES);
  } catch (error) {
    if (error instanceof TemporarilyUnavailable) throw error;
    const why = options.signal.aborted ? 'validation budget spent' : timeout.aborted ? 'timeout' : 'unreachable';
    throw new TemporarilyUnavailable(undefined, { detail: `sts: ${why}`, cause: error });
  }

  if (response.status === 200) return parseCallerIdentity(text);
  if (response.status >= 400 && response.status < 500 && response.status !== 429) {
    const code = errorCode(text);
    if (code !== undefined && RETRYABLE_CODES.has(code)) throw new TemporarilyUnavailable(undefined, { detail: `sts: ${code}` });
    // STS refused the proof itself: bad signature, unknown or expired credentials, a denied caller.
    throw new InvalidToken(code !== undefined && EXPIRED_CODES.has(code) ? 'expired' : 'signature', `sts: ${code ?? `HTTP ${response.status}`}`);
  }
  throw new TemporarilyUnavailable(undefined, { detail: `sts: HTTP ${response.status}` });
}

/** Reads at most `limit` bytes of the body, cancelling the stream past it. */
async function readCapped(response: Response, limit: number): Promise<string> {
  const declared = Number(response.headers.get('content-length') ?? '0');
  if (declared > limit) {
    await response.body?.cancel();
    throw new TemporarilyUnavailable(undefined, { detail: 'sts: response too large' });
  }
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw new TemporarilyUnavailable(undefined, { detail: 'sts: response too large' });
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Parses STS's XML, refusing document type declarations: STS never sends one, and entity tricks live there. */
function parseXml(text: string): Record<string, unknown> | undefined {
  if (text.includes('<!')) return undefined;
  try {
    const parsed: unknown = xml.parse(text);
    return typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const child = (node: unknown, name: string): unknown =>
  typeof node === 'object' && node !== null && Object.hasOwn(node, name) ? (node as Record<string, unknown>)[name] : undefined;

/**
 * `<GetCallerIdentityResponse><GetCallerIdentityResult><Arn/><UserId/><Account/></…Result></…Response>`.
 * A 200 that does not read so is an upstream fault, not the client's.
 */
function parseCallerIdentity(text: string): CallerIdentity {
  const result = child(child(parseXml(text), 'GetCallerIdentityResponse'), 'GetCallerIdentityResult');
  const account = child(result, 'Account');
  const arn = child(result, 'Arn');
  const userId = child(result, 'UserId');
  if (typeof account !== 'string' || typeof arn !== 'string' || typeof userId !== 'string' || !account || !arn || !userId) {
    throw new TemporarilyUnavailable(undefined, { detail: 'sts: malformed GetCallerIdentity response' });
  }
  return { account, arn, userId };
}

/** `<ErrorResponse><Error><Code>` (STS), or `<ErrorResponse><Errors><Error><Code>` (moto and older query APIs). */
function errorCode(text: string): string | undefined {
  const response = child(parseXml(text), 'ErrorResponse');
  const code = child(child(response, 'Error') ?? child(child(response, 'Errors'), 'Error'), 'Code');
  return typeof code === 'string' && ERROR_CODE.test(code) ? code : undefined;
}
