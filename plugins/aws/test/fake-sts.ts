import type { IncomingMessage, ServerResponse } from 'node:http';
import { startLoopbackServer, type LoopbackServer } from '@tessera/plugin-testkit';

export interface ReceivedRequest {
  readonly method: string;
  readonly path: string;
  /** Raw header pairs as they arrived, names lower-cased. */
  readonly headers: readonly (readonly [string, string])[];
  readonly body: string;
}

type Responder = (request: ReceivedRequest, response: ServerResponse) => void;

/**
 * A loopback STS for what moto cannot be made to do: outages, throttling, odd answers, ARNs of other
 * partitions. It speaks the Query API's XML and records what it was sent.
 */
export class FakeSts {
  readonly received: ReceivedRequest[] = [];
  #respond: Responder = (_request, response) => callerIdentity(response, 'arn:aws:sts::123456789012:assumed-role/deployer/job-1', '123456789012', 'AROAEXAMPLEID:job-1');

  private constructor(private readonly server: LoopbackServer) {}

  static async start(): Promise<FakeSts> {
    let fake: FakeSts | undefined;
    const server = await startLoopbackServer((request, response) => void fake!.#handle(request, response));
    fake = new FakeSts(server);
    return fake;
  }

  get url(): string {
    return this.server.url;
  }

  /** How the next requests are answered. */
  respond(responder: Responder): void {
    this.#respond = responder;
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const headers: [string, string][] = [];
    for (let index = 0; index < request.rawHeaders.length; index += 2) headers.push([request.rawHeaders[index]!.toLowerCase(), request.rawHeaders[index + 1]!]);
    const received = { method: request.method ?? '', path: request.url ?? '', headers, body: Buffer.concat(chunks).toString('utf8') };
    this.received.push(received);
    this.#respond(received, response);
  }

  close(): Promise<void> {
    return this.server.close();
  }
}

export function sendXml(response: ServerResponse, status: number, xml: string, headers: Record<string, string> = {}): void {
  response.writeHead(status, { 'content-type': 'text/xml', 'content-length': Buffer.byteLength(xml), ...headers });
  response.end(xml);
}

export function callerIdentity(response: ServerResponse, arn: string, account: string, userId: string): void {
  sendXml(
    response,
    200,
    `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>${arn}</Arn>
    <UserId>${userId}</UserId>
    <Account>${account}</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>`,
  );
}

/** STS's error document (the shape the AWS Query API documents). */
export function stsError(response: ServerResponse, status: number, code: string, message = 'error'): void {
  sendXml(
    response,
    status,
    `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>${code}</Code><Message>${message}</Message></Error>
  <RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId>
</ErrorResponse>`,
  );
}
