import { describe, expect, it } from 'vitest';
import { AddressError, parseEndpointAddress, type AddressErrorReason } from '../src/address.js';

const NO_ENV = {};

describe('parseEndpointAddress', () => {
  it.each([
    ['unix:///tmp/spire-agent/public/api.sock', 'unix:///tmp/spire-agent/public/api.sock'],
    ['unix:/tmp/agent.sock', 'unix:///tmp/agent.sock'],
    ['unix:////tmp/a.sock', 'unix:////tmp/a.sock'],
    ['tcp://127.0.0.1:8000', '127.0.0.1:8000'],
    ['tcp://10.0.0.1:1', '10.0.0.1:1'],
    ['tcp://127.0.0.1:65535', '127.0.0.1:65535'],
    ['tcp://127.0.0.1:08000', '127.0.0.1:8000'],
    ['tcp://[::1]:8000', '[::1]:8000'],
    ['tcp://[2001:db8::1]:443', '[2001:db8::1]:443'],
  ])('%s → %s', (address, target) => {
    expect(parseEndpointAddress(address, NO_ENV)).toBe(target);
  });

  it.each<[string, AddressErrorReason]>([
    ['/tmp/agent.sock', 'unsupported_scheme'],
    ['UNIX:///tmp/a.sock', 'unsupported_scheme'],
    ['http://127.0.0.1:80', 'unsupported_scheme'],
    ['npipe:spire', 'unsupported_scheme'],
    ['unix:///tmp/a b.sock', 'bad_char'],
    ['unix:///tmp/ä.sock', 'bad_char'],
    ['unix:///tmp/a.sock\n', 'bad_char'],
    ['unix:///tmp/a.sock?x=1', 'query'],
    ['unix:///tmp/a.sock#frag', 'fragment'],
    ['unix:///tmp/a%20b.sock', 'percent_encoding'],
    ['unix://host/tmp/a.sock', 'authority'],
    ['unix://localhost/tmp/a.sock', 'authority'],
    ['unix://user@/tmp/a.sock', 'userinfo'],
    ['unix://tmp/a.sock', 'authority'],
    ['unix:tmp/a.sock', 'relative_path'],
    ['unix:', 'missing_path'],
    ['unix://', 'missing_path'],
    ['unix:///', 'missing_path'],
    ['tcp:127.0.0.1:8000', 'missing_host'],
    ['tcp://', 'missing_host'],
    ['tcp://127.0.0.1:8000/', 'path'],
    ['tcp://127.0.0.1:8000/foo', 'path'],
    ['tcp://127.0.0.1:8000?x', 'query'],
    ['tcp://127.0.0.1:8000#x', 'fragment'],
    ['tcp://user@127.0.0.1:8000', 'userinfo'],
    ['tcp://localhost:8000', 'not_ip'],
    ['tcp://agent.example:8000', 'not_ip'],
    ['tcp://127.1:8000', 'not_ip'],
    ['tcp://::1:8000', 'not_ip'],
    ['tcp://[::1', 'not_ip'],
    ['tcp://[not-ip]:8000', 'not_ip'],
    ['tcp://[::1]x:8000', 'not_ip'],
    ['tcp://127.0.0.1', 'missing_port'],
    ['tcp://127.0.0.1:', 'missing_port'],
    ['tcp://[::1]', 'missing_port'],
    ['tcp://127.0.0.1:0', 'bad_port'],
    ['tcp://127.0.0.1:65536', 'bad_port'],
    ['tcp://127.0.0.1:http', 'bad_port'],
    ['tcp://127.0.0.1:-1', 'bad_port'],
    ['tcp://127.0.0.1:123456', 'bad_port'],
  ])('rejects %j (%s)', (address, reason) => {
    expect(() => parseEndpointAddress(address, NO_ENV)).toThrow(expect.objectContaining({ name: 'AddressError', reason }));
  });

  it('falls back to SPIFFE_ENDPOINT_SOCKET when no address is given', () => {
    const env = { SPIFFE_ENDPOINT_SOCKET: 'unix:///run/spire/api.sock' };
    expect(parseEndpointAddress(undefined, env)).toBe('unix:///run/spire/api.sock');
    expect(parseEndpointAddress('', env)).toBe('unix:///run/spire/api.sock');
    expect(parseEndpointAddress('tcp://127.0.0.1:1', env)).toBe('127.0.0.1:1');
  });

  it('validates the environment value like any other', () => {
    expect(() => parseEndpointAddress(undefined, { SPIFFE_ENDPOINT_SOCKET: '/run/spire/api.sock' })).toThrow(AddressError);
  });

  it('reports a missing address', () => {
    expect(() => parseEndpointAddress(undefined, NO_ENV)).toThrow(expect.objectContaining({ reason: 'missing' }));
    expect(() => parseEndpointAddress(undefined, { SPIFFE_ENDPOINT_SOCKET: '' })).toThrow(expect.objectContaining({ reason: 'missing' }));
  });

  it('reads process.env by default', () => {
    const saved = process.env.SPIFFE_ENDPOINT_SOCKET;
    process.env.SPIFFE_ENDPOINT_SOCKET = 'tcp://127.0.0.1:9';
    try {
      expect(parseEndpointAddress()).toBe('127.0.0.1:9');
    } finally {
      if (saved === undefined) delete process.env.SPIFFE_ENDPOINT_SOCKET;
      else process.env.SPIFFE_ENDPOINT_SOCKET = saved;
    }
  });
});
