import type { AuthenticatedClient, VerifiedIdentity } from '@tessera/plugin-sdk';

/**
 * Issuer parameters in policy (`grant.issuerParameters`) may name parts of the verified request:
 * `{subject}`, `{issuer}`, `{client}` and `{attributes.<name>}`. `{{` and `}}` are literal braces.
 * Only verified values are interpolated, and only when each is one name-like token (letters, digits,
 * `. _ - @ = +`, not `.` or `..`): a value cannot bring a `/`, `:`, `,`, a dot segment or a second
 * template into a SPIFFE path or a selector. Values that need more are refused, never escaped.
 */
export type TemplateValue = string | readonly string[];

const PLACEHOLDER = /\{\{|\}\}|\{([a-zA-Z]+)(?:\.([^{}]+))?\}/g;
const SAFE_VALUE = /^[A-Za-z0-9._@=+-]{1,256}$/;

export interface TemplateSource {
  readonly subject: VerifiedIdentity;
  readonly client: AuthenticatedClient;
}

/** Checks a template's placeholders at startup; returns the problems found. */
export function templateProblems(template: string): string[] {
  const problems: string[] = [];
  const rest = template.replace(PLACEHOLDER, (match, name: string | undefined, key: string | undefined) => {
    if (name === undefined) return '';
    if (name === 'attributes' ? key === undefined : !['subject', 'issuer', 'client'].includes(name) || key !== undefined) problems.push(`unknown placeholder ${match}`);
    return '';
  });
  if (/[{}]/.test(rest)) problems.push('unbalanced brace (write {{ or }} for a literal one)');
  return problems;
}

/** Fills one template; undefined when a placeholder has no usable value (the request is then refused). */
export function fillTemplate(template: string, source: TemplateSource): string | undefined {
  let missing = false;
  const filled = template.replace(PLACEHOLDER, (match, name: string | undefined, key: string | undefined) => {
    if (match === '{{') return '{';
    if (match === '}}') return '}';
    const value = lookup(name!, key, source);
    if (value === undefined || !SAFE_VALUE.test(value) || value === '.' || value === '..') {
      missing = true;
      return '';
    }
    return value;
  });
  return missing ? undefined : filled;
}

function lookup(name: string, key: string | undefined, source: TemplateSource): string | undefined {
  switch (name) {
    case 'subject':
      return source.subject.subject;
    case 'issuer':
      return source.subject.issuer;
    case 'client':
      return source.client.id;
    case 'attributes': {
      const value = Object.hasOwn(source.subject.attributes, key!) ? source.subject.attributes[key!] : undefined;
      return typeof value === 'string' ? value : undefined;
    }
    default:
      return undefined;
  }
}
