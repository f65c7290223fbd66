import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt, decodeProtectedHeader, exportSPKI, importJWK, SignJWT, type CryptoKey, type JWK } from 'jose';
import {
  InvalidToken,
  isCompactJws,
  OAuthError,
  GRANT_TYPE_TOKEN_EXCHANGE,
  type SubjectValidator,
  type TokenRejection,
  type TokenTypeUrn,
  type ValidationContext,
  type VerifiedIdentity,
} from '@tessera/plugin-sdk';
import { fileURLToPath } from 'node:url';
import { generateTestKey } from '../keys.js';
import { TOKEN_TYPE_CONTRACT_ECHO } from './echo-issuer.js';
import { startContractBroker, type ContractBroker, type PluginUnderTest } from './harness.js';
import { GARBAGE_TOKENS, leakedFragments, tamperJwsSignature } from './tokens.js';

export interface MintRequest {
  /** The `aud` to put in the token. The valid case passes the broker's issuer. */
  readonly audience: string;
  /** Seconds from now; negative for an already expired token. Default 300. */
  readonly expiresIn?: number;
}

/** What a validator plugin supplies so the kit can exercise it. */
export interface ValidatorFixture {
  /** The `subject_token_type` to present. */
  readonly tokenType: TokenTypeUrn;
  /** The config entry for the plugin, once the broker's address is known. */
  plugin(broker: { readonly issuer: string; readonly tokenEndpoint: string }): PluginUnderTest;
  /** A token the plugin must accept when `audience` names the broker. */
  mint(request: MintRequest): Promise<string>;
  /** A well-formed token from an issuer the plugin was not configured to trust. */
  mintUntrusted(request: MintRequest): Promise<string>;
  /** Alters a valid token so its signature (or equivalent proof) no longer holds. Default: flips bits in a JWS signature. */
  tamper?(token: string): string;
  /**
   * JWT plugins: the trusted issuer's public key. The kit signs with it as an HMAC secret (the classic
   * algorithm-confusion attack) and the plugin must refuse.
   */
  readonly trustedPublicJwk?: JWK;
  /** Makes the plugin's upstream hang and returns the undo. Omit only for validators that do no I/O. */
  stallUpstream?(): () => void;
  /** Releases what the fixture started. */
  close?(): Promise<void>;
  /** The broker's `delegation` block the plugin needs, e.g. `{ actorTrust: { name: 'broker' } }`. */
  readonly delegation?: Record<string, unknown>;
}

export interface ValidatorContractOptions {
  /** Network timeout for the stalled-upstream check (default 1000 ms). */
  readonly networkTimeoutMs?: number;
}

const SLACK_MS = 2_000;
/** Loaded by path like any local plugin, so the broker needs no real issuer to answer 200. */
export const ECHO_ISSUER: PluginUnderTest = { use: fileURLToPath(new URL('./echo-issuer.js', import.meta.url)) };

/**
 * The contract every subject validator meets, as vitest suites. Runs the plugin twice over: called
 * directly (exact error classes) and through a real broker over loopback HTTP (no 5xx, no token content
 * in responses or audit records).
 */
export function describeValidatorContract(
  name: string,
  setup: () => Promise<ValidatorFixture>,
  options: ValidatorContractOptions = {},
): void {
  const networkTimeoutMs = options.networkTimeoutMs ?? 1_000;

  describe(`validator contract: ${name}`, () => {
    let fixture: ValidatorFixture;
    let running: ContractBroker;
    let validator: SubjectValidator;

    beforeAll(async () => {
      fixture = await setup();
      running = await startContractBroker((issuer) => ({
        plugins: [fixture.plugin({ issuer, tokenEndpoint: `${issuer}/token` }), ECHO_ISSUER],
        ...(fixture.delegation ? { delegation: fixture.delegation } : {}),
      }));
      validator = running.validatorFor(fixture.tokenType);
    });
    afterAll(async () => {
      await running?.close();
      await fixture?.close?.();
    });

    const context = (signal: AbortSignal = AbortSignal.timeout(5_000)): ValidationContext => ({
      role: 'subject',
      tokenType: fixture.tokenType,
      brokerIssuer: running.issuer,
      tokenEndpoint: running.tokenEndpoint,
      now: new Date(),
      signal,
    });
    const exchange = (subjectToken: string) =>
      running.post({
        grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
        subject_token: subjectToken,
        subject_token_type: fixture.tokenType,
        requested_token_type: TOKEN_TYPE_CONTRACT_ECHO,
        audience: 'https://contract.example.test',
      });

    /** The validator refuses `token` with an InvalidToken, leaking nothing of it, and the broker answers 400. */
    const expectRefused = async (token: string, reasons?: readonly TokenRejection[]) => {
      const error = await validator.validate(token, context()).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error, 'validator accepted a token it must refuse').toBeDefined();
      expect(error, 'validators reject with InvalidToken, never a raw exception').toBeInstanceOf(InvalidToken);
      if (reasons) expect(reasons).toContain((error as InvalidToken).reason);
      expect(leakedFragments(token, errorTexts(error))).toEqual([]);

      const auditedBefore = running.audit.records.length;
      const response = await exchange(token);
      expect(response.status).toBe(400);
      expect(response.body.error).toBe('invalid_request');
      expect(leakedFragments(token, [response.text, JSON.stringify(running.audit.records.slice(auditedBefore))])).toEqual([]);
    };

    it('accepts a valid token and normalizes it into a JSON-safe identity', async () => {
      const token = await fixture.mint({ audience: running.issuer });
      const identity = await validator.validate(token, context());
      expectIdentityShape(identity, fixture.tokenType);
      expect(identity.audiences.some((audience) => audience === running.issuer || audience === running.tokenEndpoint)).toBe(true);
      expect(identity.expiresAt.getTime()).toBeGreaterThan(Date.now());

      const response = await exchange(token);
      expect(response.status, response.text).toBe(200);
      expect(typeof response.body.access_token).toBe('string');
      expect(response.body.issued_token_type).toBe(TOKEN_TYPE_CONTRACT_ECHO);
    });

    it('refuses an expired token', async () => {
      await expectRefused(await fixture.mint({ audience: running.issuer, expiresIn: -600 }), ['expired']);
    });

    it('refuses a token whose audience does not name the broker', async () => {
      await expectRefused(await fixture.mint({ audience: 'https://someone-else.example.test' }), ['audience']);
    });

    it('refuses a token whose signature was tampered with', async () => {
      const token = await fixture.mint({ audience: running.issuer });
      await expectRefused((fixture.tamper ?? tamperJwsSignature)(token));
    });

    it('refuses a token from an issuer it does not trust', async () => {
      await expectRefused(await fixture.mintUntrusted({ audience: running.issuer }));
    });

    it('refuses a JWT re-signed with a key the issuer never published (unknown kid)', async ({ skip }) => {
      const valid = await fixture.mint({ audience: running.issuer });
      if (!isCompactJws(valid)) return skip('not a JWT');
      const header = decodeProtectedHeader(valid);
      const key = await generateTestKey(typeof header.alg === 'string' && header.alg !== 'none' ? header.alg : 'ES256');
      const forged = await new SignJWT(decodeJwt(valid)).setProtectedHeader({ ...header, alg: key.alg, kid: `contract-${key.kid}` }).sign(key.privateKey);
      await expectRefused(forged);
    });

    it('refuses algorithm confusion: HS256 keyed with the issuer\'s public key', async ({ skip }) => {
      const valid = await fixture.mint({ audience: running.issuer });
      if (!isCompactJws(valid) || !fixture.trustedPublicJwk) return skip('not a JWT plugin, or no trusted key given');
      const header = decodeProtectedHeader(valid);
      const publicKey = (await importJWK({ ...fixture.trustedPublicJwk, alg: undefined } as JWK, String(fixture.trustedPublicJwk.alg ?? header.alg))) as CryptoKey;
      const encoder = new TextEncoder();
      // The attacker's guesses at what a confused verifier would use as the HMAC secret.
      for (const secret of [encoder.encode(JSON.stringify(fixture.trustedPublicJwk)), encoder.encode(await exportSPKI(publicKey))]) {
        const forged = await new SignJWT(decodeJwt(valid)).setProtectedHeader({ ...header, alg: 'HS256' }).sign(secret);
        await expectRefused(forged);
      }
    });

    it('refuses garbage with InvalidToken, never a raw exception or a 5xx', async () => {
      for (const garbage of GARBAGE_TOKENS) {
        const error = await validator.validate(garbage, context()).then(
          () => undefined,
          (caught: unknown) => caught,
        );
        expect(error, `accepted garbage ${JSON.stringify(garbage.slice(0, 40))}`).toBeInstanceOf(InvalidToken);
        const auditedBefore = running.audit.records.length;
        const response = await exchange(garbage);
        expect(response.status, `garbage ${JSON.stringify(garbage.slice(0, 40))}`).toBeLessThan(500);
        const texts = [...errorTexts(error), response.text, JSON.stringify(running.audit.records.slice(auditedBefore))];
        expect(leakedFragments(garbage, texts), `garbage ${JSON.stringify(garbage.slice(0, 40))}`).toEqual([]);
      }
    });

    it('settles in bounded time when its upstream hangs', async ({ skip }) => {
      if (!fixture.stallUpstream) return skip('the fixture has no upstream to stall');
      // A fresh broker: the plugin's caches are cold, so validation must reach the hung upstream.
      const restore = fixture.stallUpstream();
      let cold: ContractBroker | undefined;
      try {
        cold = await startContractBroker((issuer) => ({
          plugins: [fixture.plugin({ issuer, tokenEndpoint: `${issuer}/token` }), ECHO_ISSUER],
          network: { timeoutMs: networkTimeoutMs },
          validationTimeoutMs: networkTimeoutMs,
          ...(fixture.delegation ? { delegation: fixture.delegation } : {}),
        }));
        const coldValidator = cold.validatorFor(fixture.tokenType);
        const token = await fixture.mint({ audience: cold.issuer });
        const started = Date.now();
        const error = await coldValidator
          .validate(token, { ...context(AbortSignal.timeout(networkTimeoutMs)), brokerIssuer: cold.issuer, tokenEndpoint: cold.tokenEndpoint })
          .then(
            () => undefined,
            (caught: unknown) => caught,
          );
        expect(Date.now() - started).toBeLessThan(networkTimeoutMs + SLACK_MS);
        expect(error, 'an upstream outage must surface as an OAuthError').toBeInstanceOf(OAuthError);

        const httpStarted = Date.now();
        const response = await cold.post({
          grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
          subject_token: await fixture.mint({ audience: cold.issuer }),
          subject_token_type: fixture.tokenType,
          requested_token_type: TOKEN_TYPE_CONTRACT_ECHO,
          audience: 'https://contract.example.test',
        });
        expect(Date.now() - httpStarted).toBeLessThan(networkTimeoutMs + SLACK_MS);
        // An unreachable upstream is the one case a 5xx is right: 503 with Retry-After, never 500.
        expect([400, 503]).toContain(response.status);
      } finally {
        restore();
        await cold?.close();
      }
    });
  });
}

/** Everything an error could carry to a log or a client: message, description, detail, and its causes. */
function errorTexts(error: unknown): string[] {
  const texts: string[] = [];
  for (let current = error, depth = 0; current !== undefined && current !== null && depth < 8; depth++) {
    const { message, description, detail, cause } = current as Partial<OAuthError> & { cause?: unknown };
    texts.push(String(message ?? current), description ?? '', detail ?? '');
    current = cause;
  }
  return texts;
}

function expectIdentityShape(identity: VerifiedIdentity, tokenType: TokenTypeUrn): void {
  expect(typeof identity.issuer === 'string' && identity.issuer.length > 0, 'issuer').toBe(true);
  expect(typeof identity.subject === 'string' && identity.subject.length > 0, 'subject').toBe(true);
  expect(Array.isArray(identity.audiences) && identity.audiences.every((audience) => typeof audience === 'string'), 'audiences').toBe(true);
  expect(identity.expiresAt).toBeInstanceOf(Date);
  expect(Number.isFinite(identity.expiresAt.getTime())).toBe(true);
  expect(identity.tokenType).toBe(tokenType);
  for (const [attribute, value] of Object.entries(identity.attributes)) {
    const ok = typeof value === 'string' || (Array.isArray(value) && value.every((item) => typeof item === 'string'));
    expect(ok, `attribute ${attribute} must be a string or a list of strings`).toBe(true);
  }
  expect(JSON.parse(JSON.stringify(identity.attributes))).toEqual(identity.attributes);
  expect(JSON.parse(JSON.stringify(identity.claims))).toEqual(identity.claims);
}
