import { randomUUID } from 'node:crypto';
import { SignJWT, type JWTPayload, type JWTHeaderParameters } from 'jose';
import { sendJson, startLoopbackServer, type LoopbackServer } from './http-server.js';
import { generateTestKey, type TestKey } from './keys.js';

export interface LoopbackIssuerOptions {
  /** Path of the issuer under the server origin (default `/issuer`). */
  readonly path?: string;
  readonly alg?: string;
  /** Signing key; default a fresh one. */
  readonly key?: TestKey;
  readonly port?: number;
  /** Extra JSON documents served on the same origin, by path (e.g. a client's JWKS). */
  readonly routes?: Readonly<Record<string, () => unknown>>;
}

export interface MintOptions {
  /** Seconds from now; negative for an expired token. Default 300. */
  readonly expiresIn?: number;
  /** Override or add protected header members (e.g. `jku`, `crit`). */
  readonly header?: Partial<JWTHeaderParameters>;
  /** Sign with this key instead of the current one. */
  readonly key?: TestKey;
  /** Omit `exp` altogether. */
  readonly noExp?: boolean;
}

/**
 * A real OIDC issuer on loopback: discovery document and JWKS over HTTP, tokens signed with real keys.
 * Counts JWKS fetches, rotates keys, and can go dark to simulate an outage.
 */
export class LoopbackIssuer {
  /** Requests for the JWKS, answered or not. */
  jwksFetches = 0;
  discoveryFetches = 0;
  available = true;
  #keys: TestKey[];
  /** Responses held back while stalled. */
  #held: import('node:http').ServerResponse[] | undefined;

  private constructor(
    private readonly server: LoopbackServer,
    readonly issuer: string,
    key: TestKey,
    private readonly routes: Readonly<Record<string, () => unknown>> = {},
  ) {
    this.#keys = [key];
  }

  static async start(options: LoopbackIssuerOptions = {}): Promise<LoopbackIssuer> {
    const path = options.path ?? '/issuer';
    const key = options.key ?? (await generateTestKey(options.alg ?? 'ES256'));
    let self: LoopbackIssuer | undefined;
    const server = await startLoopbackServer((request, response) => self!.handle(request.url ?? '/', response), options.port);
    self = new LoopbackIssuer(server, `${server.url}${path}`, key, options.routes);
    return self;
  }

  get jwksUri(): string {
    return `${this.issuer}/jwks`;
  }

  get key(): TestKey {
    return this.#keys[0]!;
  }

  /** Publishes a new key and signs with it from now on; the old one stays published unless `dropOld`. */
  async rotate(options: { dropOld?: boolean; alg?: string } = {}): Promise<TestKey> {
    const next = await generateTestKey(options.alg ?? this.key.alg);
    this.#keys = options.dropOld ? [next] : [next, ...this.#keys];
    return next;
  }

  /**
   * Accepts requests but never answers them (a hung upstream) until the returned function is called,
   * which answers everything held with 503.
   */
  stall(): () => void {
    this.#held ??= [];
    return () => {
      const held = this.#held ?? [];
      this.#held = undefined;
      for (const response of held) if (!response.writableEnded && !response.destroyed) sendJson(response, 503, { error: 'unavailable' });
    };
  }

  async mint(claims: JWTPayload, options: MintOptions = {}): Promise<string> {
    const key = options.key ?? this.key;
    const now = Math.floor(Date.now() / 1000);
    const payload: JWTPayload = { iss: this.issuer, iat: now, jti: randomUUID(), ...claims };
    if (!options.noExp && payload.exp === undefined) payload.exp = now + (options.expiresIn ?? 300);
    return new SignJWT(payload).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...options.header }).sign(key.privateKey);
  }

  close(): Promise<void> {
    return this.server.close();
  }

  private handle(url: string, response: import('node:http').ServerResponse): void {
    const path = new URL(url, 'http://x').pathname;
    const base = new URL(this.issuer).pathname;
    // Requests are counted even while unavailable: tests bound how often the broker tries.
    if (path === `${base}/.well-known/openid-configuration`) this.discoveryFetches++;
    if (path === `${base}/jwks`) this.jwksFetches++;
    if (this.#held) return void this.#held.push(response);
    if (!this.available) return sendJson(response, 503, { error: 'unavailable' });
    if (path === `${base}/.well-known/openid-configuration`) {
      return sendJson(response, 200, { issuer: this.issuer, jwks_uri: this.jwksUri, id_token_signing_alg_values_supported: [this.key.alg] });
    }
    if (path === `${base}/jwks`) {
      return sendJson(response, 200, { keys: this.#keys.map((key) => key.publicJwk) });
    }
    const route = this.routes[path];
    if (route) return sendJson(response, 200, route());
    sendJson(response, 404, { error: 'not_found' });
  }
}
