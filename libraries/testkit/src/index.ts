export { LoopbackIssuer } from './loopback-issuer.js';
export type { LoopbackIssuerOptions, MintOptions } from './loopback-issuer.js';
export { generateTestKey, persistentTestKey } from './keys.js';
export type { TestKey } from './keys.js';
export { sendJson, startLoopbackServer } from './http-server.js';
export type { LoopbackServer } from './http-server.js';
