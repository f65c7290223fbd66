/**
 * The end of a verified token's acceptance window: its expiry plus the verifier's clock skew, rounded up
 * to the whole second. JOSE libraries compare whole seconds (`exp` against a floored now), so a fractional
 * `exp` stays acceptable until this rounded instant; a single-use proof must be remembered at least as
 * long, and core refuses any identity past it. `expiresAt` is a Date, or a NumericDate in seconds (`exp`
 * itself, which keeps fractions finer than a millisecond that a Date would drop).
 */
export function acceptedUntil(expiresAt: Date | number, clockSkewSeconds = 0): Date {
  const seconds = typeof expiresAt === 'number' ? expiresAt : expiresAt.getTime() / 1000;
  return new Date(Math.ceil(seconds + clockSkewSeconds) * 1000);
}
