import { InvalidRequest, type ActClaim, type ActorTrust, type AuthenticatedClient, type VerifiedIdentity } from '@tessera/plugin-sdk';

/**
 * RFC 8693 delegation semantics, independent of policy: who may act (§2.1 actor trust, §4.4 `may_act`)
 * and the chain an issued token records (§4.1 `act`, current actor outermost, earlier actors nested).
 */

/** One chain member, flattened (audit records, policy conditions, `policy explain`). */
export interface ChainMember {
  readonly sub: string;
  readonly iss?: string;
  readonly spiffe_id?: string;
}

/** What the delegation step decided: the chain to issue and who acts now. */
export interface Delegation {
  /** The chain for the issued token; undefined when nobody acts and the subject token carried none. */
  readonly act: ActClaim | undefined;
  /** Chain members, current actor first. */
  readonly members: readonly ChainMember[];
  /** How the current actor is trusted, for delegation requests. */
  readonly actorTrust?: ActorTrust;
}

const MAX_MEMBER_LENGTH = 1_024;
const SPIFFE_TRUST_DOMAIN_ISSUER = /^spiffe:\/\/[a-z0-9._-]+$/;

export interface DelegationInput {
  readonly client: AuthenticatedClient;
  readonly subject: VerifiedIdentity;
  /**
   * How the validator that verified the subject is trusted. Only a token this broker issued (`broker`)
   * may bring a chain: anyone else's `act` is a claim this broker cannot vouch for.
   */
  readonly subjectTrust?: ActorTrust;
  readonly actor?: VerifiedIdentity;
  /** How the validator that verified the actor is trusted (undefined: not at all). */
  readonly actorTrust?: ActorTrust;
  readonly brokerIssuer: string;
  readonly maxChainDepth: number;
}

/**
 * Checks a request's delegation before policy sees it: the actor must be a trusted identity, the subject's
 * `may_act` must name whoever acts, and the chain (the subject's own `act` plus the new actor) must fit
 * the depth cap. Throws `invalid_request`; returns the chain to issue.
 */
export function planDelegation(input: DelegationInput, onChain?: (members: readonly ChainMember[]) => void): Delegation {
  const { subject, actor, client } = input;
  if (subject.claims.act !== undefined && !(input.subjectTrust === 'broker' && subject.issuer === input.brokerIssuer)) {
    throw InvalidRequest.subjectToken('subject: act_from_foreign_issuer');
  }
  const prior = readPriorChain(subject, input.maxChainDepth);
  const members = actor && input.actorTrust ? [actorMember(actor, input.actorTrust), ...prior] : prior;
  // Audit records carry the chain even when the checks below refuse it.
  onChain?.(members);
  if (actor) {
    const refusal = actorRefusal(actor, input.actorTrust, input.brokerIssuer, client);
    if (refusal) throw InvalidRequest.actorToken(`actor: ${refusal}`);
  } else if (prior.length > 0 && !isParty(actingParty(client, undefined), prior[0]!)) {
    // Impersonating a delegated token would leave its current actor named as the one acting: only that
    // actor may (to narrow it); anyone else must present an actor token and extend the chain.
    throw InvalidRequest.policy('delegation: delegated_subject_needs_actor');
  }
  if (members.length > input.maxChainDepth) throw InvalidRequest.policy(`delegation: chain_too_deep (${members.length} > ${input.maxChainDepth})`);
  const mayAct = mayActRefusal(subject, actingParty(client, actor));
  if (mayAct) throw InvalidRequest.policy(`delegation: ${mayAct}`);
  return { act: toActClaim(members), members, ...(actor && input.actorTrust ? { actorTrust: input.actorTrust } : {}) };
}

/** The acting party is `member`: same `sub`, and same `iss` where both name one. */
function isParty(party: ChainMember, member: ChainMember): boolean {
  return party.sub === member.sub && (party.iss === undefined || member.iss === undefined || party.iss === member.iss);
}

/**
 * Reads the chain a verified subject token already carries, keeping only `sub`, `iss` and `spiffe_id` of
 * each entry (§4.1: other members of `act` carry no meaning). Malformed or deeper than `maxDepth` refuses:
 * a chain is never shortened or repaired.
 */
export function readPriorChain(subject: VerifiedIdentity, maxDepth: number): readonly ChainMember[] {
  const members: ChainMember[] = [];
  let entry: unknown = subject.claims.act;
  while (entry !== undefined) {
    if (members.length >= maxDepth) throw InvalidRequest.policy('delegation: chain_too_deep');
    const member = chainMember(entry);
    if (!member) throw InvalidRequest.subjectToken('subject: act claim malformed');
    members.push(member);
    entry = (entry as { act?: unknown }).act;
  }
  return members;
}

/**
 * Actors must be identities the deployment already trusts: a workload's JWT-SVID or a token this broker
 * issued. Returns the refusal reason, or undefined when the actor may act.
 */
export function actorRefusal(actor: VerifiedIdentity, trust: ActorTrust | undefined, brokerIssuer: string, client: AuthenticatedClient): string | undefined {
  if (trust === undefined) return 'actor_not_trusted';
  if (trust === 'workload' && !(SPIFFE_TRUST_DOMAIN_ISSUER.test(actor.issuer) && actor.subject.startsWith(`${actor.issuer}/`))) return 'actor_not_trusted';
  if (trust === 'broker') {
    if (actor.issuer !== brokerIssuer) return 'actor_not_trusted';
    // A broker token proves a party only as its own credential: issued to the client it names, and
    // presented by that client. Holding someone else's bearer token proves nothing about who acts.
    if (actor.claims.client_id !== actor.subject || client.id !== actor.subject) return 'actor_not_own_token';
  }
  // An actor that is itself acting for someone would hide whose authority it brings.
  if (actor.claims.act !== undefined) return 'actor_is_delegated';
  return undefined;
}

/** The chain entry naming an admitted actor. */
export function actorMember(actor: VerifiedIdentity, trust: ActorTrust): ChainMember {
  return { sub: actor.subject, iss: actor.issuer, ...(trust === 'workload' ? { spiffe_id: actor.subject } : {}) };
}

/** The party that will act for the subject: the actor when there is one, otherwise the client itself. */
export function actingParty(client: AuthenticatedClient, actor: VerifiedIdentity | undefined): ChainMember {
  if (actor) return { sub: actor.subject, iss: actor.issuer };
  if (client.identity) return { sub: client.identity.subject, iss: client.identity.issuer };
  return { sub: client.id };
}

/**
 * §4.4: a subject token's `may_act` names who may act for its subject. Every member it states (`sub`,
 * and `iss` when present) must equal the acting party's; any other member is refused, never ignored.
 * It binds the exchange of the token that carries it: tokens this broker issues carry the chain instead.
 */
export function mayActRefusal(subject: VerifiedIdentity, party: ChainMember): string | undefined {
  const mayAct = subject.claims.may_act;
  if (mayAct === undefined) return undefined;
  if (!isPlainObject(mayAct) || typeof mayAct.sub !== 'string') return 'may_act_malformed';
  // A member this broker cannot compare would be a restriction silently ignored.
  if (Object.keys(mayAct).some((member) => member !== 'sub' && member !== 'iss')) return 'may_act_unsupported';
  if (mayAct.sub !== party.sub) return 'may_act_mismatch';
  if (mayAct.iss !== undefined && mayAct.iss !== party.iss) return 'may_act_mismatch';
  return undefined;
}

/** Nests members (current actor first) into an `act` claim. */
export function toActClaim(members: readonly ChainMember[]): ActClaim | undefined {
  let act: ActClaim | undefined;
  for (const member of [...members].reverse()) act = { ...member, ...(act ? { act } : {}) };
  return act;
}

function chainMember(entry: unknown): ChainMember | undefined {
  if (!isPlainObject(entry)) return undefined;
  const { sub, iss, spiffe_id: spiffeId } = entry;
  if (!isMemberValue(sub)) return undefined;
  if (iss !== undefined && !isMemberValue(iss)) return undefined;
  if (spiffeId !== undefined && !isMemberValue(spiffeId)) return undefined;
  return { sub, ...(iss !== undefined ? { iss } : {}), ...(spiffeId !== undefined ? { spiffe_id: spiffeId } : {}) };
}

function isMemberValue(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= MAX_MEMBER_LENGTH;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
