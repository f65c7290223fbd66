/**
 * Workload API endpoint addresses (SPIFFE_Workload_Endpoint.md): `unix:///absolute/path` or
 * `tcp://<ip>:<port>`, turned into a @grpc/grpc-js target.
 */
import { isIPv4, isIPv6 } from 'node:net';

/** Environment variable clients must fall back to when no address is configured. */
export const SPIFFE_ENDPOINT_SOCKET = 'SPIFFE_ENDPOINT_SOCKET';

/** Why an endpoint address was refused. Stable; safe to log. */
export type AddressErrorReason =
  | 'missing'
  | 'bad_char'
  | 'unsupported_scheme'
  | 'query'
  | 'fragment'
  | 'percent_encoding'
  | 'userinfo'
  | 'authority'
  | 'relative_path'
  | 'missing_path'
  | 'missing_host'
  | 'not_ip'
  | 'missing_port'
  | 'bad_port'
  | 'path';

const MESSAGES: Record<AddressErrorReason, string> = {
  missing: `no endpoint address given and ${SPIFFE_ENDPOINT_SOCKET} is not set`,
  bad_char: 'endpoint address must be printable ASCII without spaces',
  unsupported_scheme: 'endpoint address must start with unix:// or tcp://',
  query: 'endpoint address must not contain a query',
  fragment: 'endpoint address must not contain a fragment',
  percent_encoding: 'endpoint address must not contain percent-encoding',
  userinfo: 'endpoint address must not contain userinfo',
  authority: 'unix endpoint address must not have an authority (use unix:///absolute/path)',
  relative_path: 'unix endpoint address must have an absolute path',
  missing_path: 'unix endpoint address must include a socket path',
  missing_host: 'tcp endpoint address must have a host (tcp://ip:port)',
  not_ip: 'tcp endpoint host must be an IP address literal',
  missing_port: 'tcp endpoint address must include a port',
  bad_port: 'tcp endpoint port must be 1-65535',
  path: 'tcp endpoint address must not have a path',
};

/** An endpoint address was refused. */
export class AddressError extends Error {
  override readonly name = 'AddressError';
  constructor(readonly reason: AddressErrorReason) {
    super(MESSAGES[reason]);
  }
}

const PRINTABLE = /^[\x21-\x7e]+$/;

/**
 * Parses a Workload API endpoint address and returns the @grpc/grpc-js target: `unix:///path`
 * or `ip:port` (`[v6]:port`). With no `address` (or `''`), uses `$SPIFFE_ENDPOINT_SOCKET`.
 * Throws {@link AddressError}.
 */
export function parseEndpointAddress(address?: string, env: NodeJS.ProcessEnv = process.env): string {
  const text = address === undefined || address === '' ? env[SPIFFE_ENDPOINT_SOCKET] : address;
  if (text === undefined || text === '') throw new AddressError('missing');
  if (!PRINTABLE.test(text)) throw new AddressError('bad_char');
  if (text.includes('#')) throw new AddressError('fragment');
  if (text.includes('?')) throw new AddressError('query');
  // A socket path is used verbatim by grpc-js; decoding here could make two strings one socket.
  if (text.includes('%')) throw new AddressError('percent_encoding');
  if (text.startsWith('unix:')) return unixTarget(text.slice('unix:'.length));
  if (text.startsWith('tcp:')) return tcpTarget(text.slice('tcp:'.length));
  throw new AddressError('unsupported_scheme');
}

function unixTarget(rest: string): string {
  let path = rest;
  if (rest.startsWith('//')) {
    const end = rest.indexOf('/', 2);
    const authority = end === -1 ? rest.slice(2) : rest.slice(2, end);
    if (authority.includes('@')) throw new AddressError('userinfo');
    if (authority !== '') throw new AddressError('authority');
    path = end === -1 ? '' : rest.slice(end);
  }
  if (path === '' || path === '/') throw new AddressError('missing_path');
  if (!path.startsWith('/')) throw new AddressError('relative_path');
  return `unix://${path}`;
}

function tcpTarget(rest: string): string {
  if (!rest.startsWith('//')) throw new AddressError('missing_host');
  const end = rest.indexOf('/', 2);
  if (end !== -1) throw new AddressError('path');
  const authority = rest.slice(2);
  if (authority.includes('@')) throw new AddressError('userinfo');
  if (authority === '') throw new AddressError('missing_host');
  let host: string;
  let port: string | undefined;
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close === -1) throw new AddressError('not_ip');
    host = authority.slice(1, close);
    if (!isIPv6(host)) throw new AddressError('not_ip');
    const after = authority.slice(close + 1);
    if (after !== '' && !after.startsWith(':')) throw new AddressError('not_ip');
    port = after === '' ? undefined : after.slice(1);
    host = `[${host}]`;
  } else {
    const colon = authority.lastIndexOf(':');
    host = colon === -1 ? authority : authority.slice(0, colon);
    port = colon === -1 ? undefined : authority.slice(colon + 1);
    // Spec: an IP literal, so no DNS answer can redirect the client to another endpoint.
    if (!isIPv4(host)) throw new AddressError('not_ip');
  }
  if (port === undefined || port === '') throw new AddressError('missing_port');
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65_535) throw new AddressError('bad_port');
  return `${host}:${Number(port)}`;
}
