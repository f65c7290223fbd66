import { randomUUID } from 'node:crypto';

/**
 * An incoming id ends up in audit records, logs and a response header, so only a short run of
 * characters that need no escaping anywhere is taken (UUIDs, ULIDs, trace ids, `req-42:a.b`).
 * A header sent twice arrives joined with ", " and so fails too.
 */
const ACCEPTED_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * The request id of the audit record, the logs and the `X-Request-Id` response header: the caller's
 * `X-Request-Id` when acceptable, else the trace id of the request span when tracing is on, else a fresh UUID.
 */
export function chooseRequestId(incoming: string | undefined, traceId: string | undefined): string {
  if (incoming !== undefined && ACCEPTED_REQUEST_ID.test(incoming)) return incoming;
  return traceId ?? randomUUID();
}
