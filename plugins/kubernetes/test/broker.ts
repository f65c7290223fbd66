import { expect } from 'vitest';
import { GRANT_TYPE_TOKEN_EXCHANGE, InvalidToken, type TokenTypeUrn, type ValidationContext } from '@tessera/plugin-sdk';
import { ECHO_ISSUER, startContractBroker, TOKEN_TYPE_CONTRACT_ECHO, type ContractBroker } from '@tessera/plugin-testkit/contract';
import { TOKEN_TYPE_KUBERNETES_SA } from '../src/index.js';

export { TOKEN_TYPE_CONTRACT_ECHO };

/** A real broker on loopback with this plugin (loaded as an operator would) and the echo issuer. */
export function startBroker(config: Record<string, unknown>, rules?: readonly Record<string, unknown>[]): Promise<ContractBroker> {
  return startContractBroker(() => ({ plugins: [{ use: '@tessera/plugin-kubernetes', config }, ECHO_ISSUER], ...(rules ? { rules } : {}) }));
}

export function validationContext(running: ContractBroker, tokenType: TokenTypeUrn = TOKEN_TYPE_KUBERNETES_SA): ValidationContext {
  return { role: 'subject', tokenType, brokerIssuer: running.issuer, tokenEndpoint: running.tokenEndpoint, now: new Date(), signal: AbortSignal.timeout(5_000) };
}

export function validate(running: ContractBroker, token: string, tokenType: TokenTypeUrn = TOKEN_TYPE_KUBERNETES_SA) {
  return running.validatorFor(tokenType).validate(token, validationContext(running, tokenType));
}

/** What a validation rejected with (undefined when it accepted). */
export function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (error: unknown) => error,
  );
}

export function exchange(running: ContractBroker, subjectToken: string, options: { tokenType?: TokenTypeUrn; audience?: string } = {}) {
  return running.post({
    grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
    subject_token: subjectToken,
    subject_token_type: options.tokenType ?? TOKEN_TYPE_KUBERNETES_SA,
    requested_token_type: TOKEN_TYPE_CONTRACT_ECHO,
    audience: options.audience ?? 'https://contract.example.test',
  });
}

/** Negative checks: the status, the OAuth error code, no token issued, nothing of the token echoed back. */
export function expectRefusedExchange(response: { status: number; body: Record<string, unknown>; text: string }, token: string, status: number, error: string): void {
  expect(response.status, response.text).toBe(status);
  expect(response.body.error).toBe(error);
  expect(response.body.access_token).toBeUndefined();
  for (const segment of token.split('.')) expect(response.text).not.toContain(segment.slice(0, 16));
}

/** The validator refuses `token` for `reason` (and a detail containing `detail`), and so does a real exchange. */
export async function expectValidatorRefusal(running: ContractBroker, token: string, reason: string, detail?: string): Promise<void> {
  const error = await rejection(validate(running, token));
  expect(error).toBeInstanceOf(InvalidToken);
  expect((error as InvalidToken).reason).toBe(reason);
  if (detail) expect((error as InvalidToken).detail).toContain(detail);
  expectRefusedExchange(await exchange(running, token), token, 400, 'invalid_request');
}
