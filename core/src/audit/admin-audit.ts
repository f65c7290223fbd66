/** One record per kill-switch action (admin API or CLI), refusals included. */
export interface AdminAuditRecord {
  readonly event: 'admin';
  readonly action: 'revocation.create' | 'revocation.list' | 'revocation.delete';
  /** Where the action came from: the admin API, or `tessera revoke` / `tessera revocations` on the store. */
  readonly via: 'http' | 'cli';
  readonly decision: 'allow' | 'deny';
  readonly requestId: string;
  /** OAuth error code sent on denial. */
  readonly error?: string;
  /** Internal reason: never sent to the caller. */
  readonly reason?: string;
  /** The admin client (http). */
  readonly client?: { readonly id: string; readonly authMethod: string };
  /** The entry created or removed. */
  readonly entry?: {
    readonly kind: string;
    readonly value: string;
    readonly issuer?: string;
    readonly expiresAt?: string;
    readonly reason?: string;
  };
  /** delete: whether there was such an entry; list: how many were listed. */
  readonly found?: boolean;
  readonly count?: number;
  /**
   * `failed` on the follow-up of an admin API change: the record before it (same `requestId`, `allow`) was
   * written before the change was made, and the store did not confirm the change. After a timeout it may
   * still have been applied: `tessera revocations list` shows the truth.
   */
  readonly outcome?: 'failed';
  readonly latencyMs: number;
}
