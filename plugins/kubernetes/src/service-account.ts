import type { JWTPayload } from 'jose';
import { InvalidToken, type IdentityAttributes } from '@tessera/plugin-sdk';

/** What a verified token proves about the workload, from either the token's claims or a TokenReview. */
export interface ServiceAccountIdentity {
  readonly namespace: string;
  readonly name: string;
  readonly uid?: string;
  readonly pod?: { readonly name?: string; readonly uid?: string };
  readonly node?: { readonly name?: string; readonly uid?: string };
  /** `JTI=<jti>` for bound tokens, as the API server reports it. */
  readonly credentialId?: string;
}

// Kubernetes object names: namespaces are DNS labels, service accounts DNS subdomains. A signed token
// carrying anything else did not come from a real cluster; refusing keeps attribute values template-safe.
const NAMESPACE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const OBJECT_NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const SAFE_VALUE = /^[\x21-\x7e]{1,253}$/;
const SA_USERNAME = /^system:serviceaccount:([^:]+):([^:]+)$/;

/** `system:serviceaccount:<namespace>:<name>`: the subject of every service-account token. */
export function serviceAccountUsername(namespace: string, name: string): string {
  return `system:serviceaccount:${namespace}:${name}`;
}

/**
 * Reads the structured `kubernetes.io` claim of a projected (bound) token. The subject is taken from these
 * fields and `sub` must agree with them: parsing `sub` alone is how validators get confused.
 */
export function projectedServiceAccount(payload: JWTPayload): ServiceAccountIdentity {
  const k8s = object(payload['kubernetes.io']);
  if (!k8s) throw new InvalidToken('claims', 'kubernetes.io claim missing');
  // `warnafter` marks an auto-mounted token whose lifetime the API server extended (up to a year) for old
  // clients. Such tokens carry the API server audience; refuse them even if that audience was allowed.
  if (k8s.warnafter !== undefined) throw new InvalidToken('claims', 'kubernetes.io.warnafter (extended auto-mounted token)');
  const serviceAccount = object(k8s.serviceaccount);
  const namespace = k8s.namespace;
  const name = serviceAccount?.name;
  if (typeof namespace !== 'string' || !NAMESPACE.test(namespace) || namespace.length > 63) throw new InvalidToken('claims', 'kubernetes.io.namespace');
  if (typeof name !== 'string' || !OBJECT_NAME.test(name) || name.length > 253) throw new InvalidToken('claims', 'kubernetes.io.serviceaccount.name');
  if (payload.sub !== serviceAccountUsername(namespace, name)) throw new InvalidToken('claims', 'sub does not match kubernetes.io');
  return {
    namespace,
    name,
    uid: safe(serviceAccount?.uid),
    pod: boundObject(k8s.pod),
    node: boundObject(k8s.node),
    credentialId: typeof payload.jti === 'string' ? safe(`JTI=${payload.jti}`) : undefined,
  };
}

/** The TokenReview `status.user` of an authenticated service-account token. */
export interface ReviewedUser {
  readonly username?: string;
  readonly uid?: string;
  readonly extra?: Readonly<Record<string, readonly string[]>>;
}

const EXTRA = 'authentication.kubernetes.io/';

/** Maps what the API server says about an authenticated token; anything but a service account is refused. */
export function reviewedServiceAccount(user: ReviewedUser | undefined): ServiceAccountIdentity {
  // TokenReview also authenticates users, bootstrap and static tokens: only service accounts are workloads.
  const match = SA_USERNAME.exec(user?.username ?? '');
  const [namespace, name] = match ? [match[1]!, match[2]!] : [];
  if (!namespace || !name || !NAMESPACE.test(namespace) || !OBJECT_NAME.test(name)) throw new InvalidToken('claims', 'tokenreview user is not a service account');
  const extra = (key: string) => {
    const values = user?.extra?.[`${EXTRA}${key}`];
    return Array.isArray(values) && values.length === 1 ? safe(values[0]) : undefined;
  };
  return {
    namespace,
    name,
    uid: safe(user?.uid),
    pod: definedPart({ name: extra('pod-name'), uid: extra('pod-uid') }),
    node: definedPart({ name: extra('node-name'), uid: extra('node-uid') }),
    credentialId: extra('credential-id'),
  };
}

/** Policy attributes: only what the cluster vouches for, only when present. */
export function serviceAccountAttributes(cluster: string, account: ServiceAccountIdentity): IdentityAttributes {
  const attributes: Record<string, string> = {
    'k8s.cluster': cluster,
    'k8s.namespace': account.namespace,
    'k8s.serviceAccount': account.name,
  };
  const optional: Record<string, string | undefined> = {
    'k8s.serviceAccountUid': account.uid,
    'k8s.pod': account.pod?.name,
    'k8s.podUid': account.pod?.uid,
    'k8s.node': account.node?.name,
    'k8s.nodeUid': account.node?.uid,
    'k8s.credentialId': account.credentialId,
  };
  for (const [key, value] of Object.entries(optional)) if (value !== undefined) attributes[key] = value;
  return attributes;
}

function object(value: unknown): Record<string, unknown> | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

function safe(value: unknown): string | undefined {
  return typeof value === 'string' && SAFE_VALUE.test(value) ? value : undefined;
}

function boundObject(value: unknown): { name?: string; uid?: string } | undefined {
  const bound = object(value);
  return bound ? definedPart({ name: safe(bound.name), uid: safe(bound.uid) }) : undefined;
}

function definedPart(part: { name: string | undefined; uid: string | undefined }): { name?: string; uid?: string } | undefined {
  if (part.name === undefined && part.uid === undefined) return undefined;
  return { ...(part.name !== undefined ? { name: part.name } : {}), ...(part.uid !== undefined ? { uid: part.uid } : {}) };
}
