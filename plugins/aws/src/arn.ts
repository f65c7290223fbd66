/**
 * The caller ARNs STS returns, after Vault's `parseIamArn`: `arn:<partition>:<service>::<account>:<resource>`.
 * Only two kinds are workload identities here: assumed roles and (when allowed) IAM users.
 */
export type Principal =
  | {
      readonly kind: 'assumed-role';
      readonly partition: string;
      readonly account: string;
      /** The role as IAM names it, `arn:<p>:iam::<account>:role/<name>`. STS leaves out the role's path, so this does too. */
      readonly roleArn: string;
      readonly roleName: string;
      /** Chosen by whoever assumed the role: informative, never an authorization input on its own. */
      readonly sessionName: string;
    }
  | {
      readonly kind: 'user';
      readonly partition: string;
      readonly account: string;
      readonly userArn: string;
      readonly userName: string;
    };

export type ParsedArn = Principal | { readonly kind: 'unsupported'; readonly type: string } | undefined;

const NAME = /^[\w+=,.@-]{1,64}$/;
const PATH_SEGMENT = /^[\w+=,.@-]{1,512}$/;
const PARTITION = /^aws(-[a-z]+)*$/;
const ACCOUNT = /^\d{12}$/;

/** Parses a caller ARN; `undefined` when it is not an ARN at all, `unsupported` for root, federated users and the like. */
export function parseCallerArn(arn: string): ParsedArn {
  const parts = arn.split(':');
  if (parts.length !== 6 || parts[0] !== 'arn' || parts[3] !== '') return undefined;
  const [, partition, service, , account, resource] = parts as [string, string, string, string, string, string];
  if (!PARTITION.test(partition) || !ACCOUNT.test(account)) return undefined;
  const segments = resource.split('/');
  const type = segments[0] ?? '';
  if (service === 'sts' && type === 'assumed-role') {
    // assumed-role/<RoleName>/<RoleSessionName>: no path, whatever path the role has in IAM.
    if (segments.length !== 3) return undefined;
    const [, roleName, sessionName] = segments as [string, string, string];
    if (!NAME.test(roleName) || !NAME.test(sessionName)) return undefined;
    return { kind: 'assumed-role', partition, account, roleArn: `arn:${partition}:iam::${account}:role/${roleName}`, roleName, sessionName };
  }
  if (service === 'iam' && type === 'user') {
    // user/<path>/<UserName>: the path is part of the user's identity and stays in the ARN.
    if (segments.length < 2) return undefined;
    const userName = segments.at(-1) as string;
    if (!NAME.test(userName) || !segments.slice(1, -1).every((segment) => PATH_SEGMENT.test(segment))) return undefined;
    return { kind: 'user', partition, account, userArn: arn, userName };
  }
  // `root` (the account's root credentials), `federated-user`, IAM `role` (never a caller)...
  return { kind: 'unsupported', type: /^[a-z-]{1,32}$/.test(type) ? type : 'unknown' };
}

/**
 * Compiles a configured role ARN pattern. `*` matches any run of role-name characters, so it never
 * crosses a `:` or `/`: `arn:aws:iam::*:role/deploy-*` cannot match another field or a path.
 */
export function compileRoleArnPattern(pattern: string): (roleArn: string) => boolean {
  const source = pattern
    .split(/\*+/)
    .map((literal) => literal.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .join('[\\w+=,.@-]*');
  const regex = new RegExp(`^${source}$`);
  return (roleArn) => regex.test(roleArn);
}
