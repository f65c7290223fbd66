/**
 * One typed error for both gRPC clients (Workload API and Delegated Identity API).
 *
 * Messages are fixed per code: the server's status text is read to classify, never copied, so a
 * token or claim an agent echoes back cannot reach logs or callers through this error.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';

/** What went wrong, as a stable code. */
export type WorkloadApiErrorCode =
  /** The request was refused as malformed (missing security header, empty audience, bad selectors). Never retried. */
  | 'invalid_argument'
  /** Workload API: the agent has no identity for this caller (yet). Retryable. */
  | 'permission_denied'
  /** Delegated Identity API: the caller's SPIFFE ID is not in the agent's `authorized_delegates`. */
  | 'not_authorized_delegate'
  /** Delegated Identity API: no registration entry matches (the caller's, or the selectors'). */
  | 'no_identity'
  /** Agent not reachable, starting up, overloaded, or it dropped the call. Retryable. */
  | 'unavailable'
  /** The call's deadline passed. */
  | 'timeout'
  /** Cancelled by the caller's AbortSignal. */
  | 'cancelled'
  /** The agent does not implement this RPC. Never retried. */
  | 'unimplemented'
  /** The agent answered with something malformed (bad SPIFFE ID, token or bundle). */
  | 'invalid_response'
  /** The client was closed. */
  | 'closed'
  /** Any other gRPC status, or a failure inside this library or a callback. */
  | 'internal';

const MESSAGES: Record<WorkloadApiErrorCode, string> = {
  invalid_argument: 'request refused as invalid',
  permission_denied: 'permission denied by the SPIFFE endpoint',
  not_authorized_delegate: 'caller is not an authorized delegate of the SPIRE agent',
  no_identity: 'no identity issued for the given selectors',
  unavailable: 'SPIFFE endpoint unavailable',
  timeout: 'SPIFFE endpoint call timed out',
  cancelled: 'SPIFFE endpoint call cancelled',
  unimplemented: 'SPIFFE endpoint does not implement this call',
  invalid_response: 'SPIFFE endpoint sent an invalid response',
  closed: 'client is closed',
  internal: 'SPIFFE endpoint call failed',
};

// The spec's "do not retry" cases, plus the ones the caller chose.
const FINAL: ReadonlySet<WorkloadApiErrorCode> = new Set(['invalid_argument', 'unimplemented', 'cancelled', 'closed']);

/** A Workload API or Delegated Identity API call failed. */
export class WorkloadApiError extends Error {
  override readonly name = 'WorkloadApiError';
  readonly code: WorkloadApiErrorCode;
  /** The RPC, e.g. `FetchJWTSVID`. */
  readonly rpc: string;
  /** The gRPC status code when the failure came from the wire; absent for local checks. */
  readonly grpcStatus?: number;
  /** Names the rule broken by a local check or a malformed response; never token or key content. */
  readonly detail?: string;

  constructor(code: WorkloadApiErrorCode, rpc: string, extra: { grpcStatus?: number; detail?: string; cause?: unknown } = {}) {
    super(extra.detail === undefined ? MESSAGES[code] : `${MESSAGES[code]}: ${extra.detail}`, { cause: extra.cause });
    this.code = code;
    this.rpc = rpc;
    if (extra.grpcStatus !== undefined) this.grpcStatus = extra.grpcStatus;
    if (extra.detail !== undefined) this.detail = extra.detail;
  }

  /** True when the same call may succeed later (the spec's "retry with backoff" cases). */
  get retryable(): boolean {
    return !FINAL.has(this.code);
  }
}

/** Which API a status came from: PermissionDenied means different things on each. */
export type ApiKind = 'workload' | 'delegated';

/** Maps a grpc-js error (or anything thrown around a call) to a {@link WorkloadApiError}. */
export function fromGrpcError(error: unknown, rpc: string, api: ApiKind): WorkloadApiError {
  if (error instanceof WorkloadApiError) return error;
  const code = typeof error === 'object' && error !== null && 'code' in error ? (error as { code: unknown }).code : undefined;
  const details = typeof error === 'object' && error !== null && 'details' in error ? String((error as { details: unknown }).details) : '';
  if (typeof code !== 'number') return new WorkloadApiError('internal', rpc);
  return new WorkloadApiError(codeFor(code, details, api), rpc, { grpcStatus: code });
}

function codeFor(code: number, details: string, api: ApiKind): WorkloadApiErrorCode {
  switch (code) {
    case GrpcStatus.INVALID_ARGUMENT:
      return 'invalid_argument';
    case GrpcStatus.PERMISSION_DENIED:
      return api === 'delegated' ? delegatedDenial(details) : 'permission_denied';
    case GrpcStatus.UNAVAILABLE:
      return 'unavailable';
    case GrpcStatus.DEADLINE_EXCEEDED:
      return 'timeout';
    // Our own cancellations never get here (the clients know when their signal fired), so a
    // CANCELLED status means the agent dropped the call, e.g. while shutting down.
    case GrpcStatus.CANCELLED:
      return 'unavailable';
    case GrpcStatus.UNIMPLEMENTED:
      return 'unimplemented';
    default:
      return 'internal';
  }
}

// SPIRE's texts (pkg/agent/api/delegatedidentity/v1): "caller not configured as an authorized
// delegate" and "no identity issued". Only the status text tells them apart.
function delegatedDenial(details: string): WorkloadApiErrorCode {
  const text = details.toLowerCase();
  if (text.includes('authorized delegate')) return 'not_authorized_delegate';
  if (text.includes('no identity issued')) return 'no_identity';
  return 'permission_denied';
}
