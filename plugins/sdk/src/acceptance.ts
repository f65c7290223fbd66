/**
 * The end of a verified token's acceptance window: its expiry plus the verifier's clock skew, rounded up
 * to the whole second. JOSE libraries compare whole seconds (`exp` against a floored now), so a fractional
 * `exp` stays acceptable until this rounded instant; a single-use proof must be remembered at least as
 * long, and core refuses any identity past it.
 */
export function acceptedUntil(expiresAt: Date, clockSkewSeconds = 0): Date {
  return new Date(Math.ceil((expiresAt.getTime() + clockSkewSeconds * 1000) / 1000) * 1000);
}
