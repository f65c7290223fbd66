const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// Azure resource group names: 1-90 letters, digits, `_`, `(`, `)`, `-`, `.`.
const RESOURCE_GROUP = /^[\p{L}\p{N}_().-]{1,90}$/u;

/** What policy may use from an Azure resource id. Lowercased: Azure resource ids are case-insensitive. */
export interface AzureResource {
  readonly subscriptionId: string;
  readonly resourceGroup?: string;
}

/**
 * Reads subscription and resource group from an Azure resource id such as a token's `xms_mirid`
 * (`/subscriptions/{id}/resourcegroups/{name}/providers/...`). Segment names are matched
 * case-insensitively (tokens carry `resourcegroups`, the portal shows `resourceGroups`). Anything
 * else yields undefined or only the parts that are well-formed, never a guess.
 */
export function parseResourceId(resourceId: string): AzureResource | undefined {
  const segments = resourceId.split('/');
  if (segments[0] !== '' || segments[1]?.toLowerCase() !== 'subscriptions') return undefined;
  const subscriptionId = segments[2];
  if (subscriptionId === undefined || !GUID.test(subscriptionId)) return undefined;
  const resource = { subscriptionId: subscriptionId.toLowerCase() };
  const resourceGroup = segments[4];
  if (segments[3]?.toLowerCase() !== 'resourcegroups' || resourceGroup === undefined || !RESOURCE_GROUP.test(resourceGroup)) return resource;
  return { ...resource, resourceGroup: resourceGroup.toLowerCase() };
}

/** True when a value matches the pattern. */
export type Matcher = (value: string) => boolean;

type Step = { readonly literal: string } | { readonly wildcard: 'segment' | 'any' };

/**
 * Compiles a resource id pattern, matched case-insensitively and anchored at both ends: `*` matches
 * within one `/` segment, `**` across segments. Runs in O(value × pattern) by tracking every pattern
 * position at once: no regex, so no backtracking on attacker-influenced ids.
 */
export function compileResourceIdPattern(pattern: string): Matcher {
  const normalized = pattern.toLowerCase();
  if (!normalized.includes('*')) return (value) => value.toLowerCase() === normalized;
  const steps: Step[] = [];
  const chars = Array.from(normalized);
  for (let index = 0; index < chars.length; index++) {
    if (chars[index] !== '*') steps.push({ literal: chars[index]! });
    else if (chars[index + 1] === '*') {
      steps.push({ wildcard: 'any' });
      index++;
    } else steps.push({ wildcard: 'segment' });
  }
  const size = steps.length;
  // A wildcard may match nothing: being at it also means being just past it.
  const close = (active: Uint8Array) => {
    for (let position = 0; position < size; position++) if (active[position] && 'wildcard' in steps[position]!) active[position + 1] = 1;
  };
  return (value) => {
    let active = new Uint8Array(size + 1);
    active[0] = 1;
    close(active);
    for (const char of value.toLowerCase()) {
      const next = new Uint8Array(size + 1);
      let alive = false;
      for (let position = 0; position < size; position++) {
        if (!active[position]) continue;
        const step = steps[position]!;
        if ('literal' in step) {
          if (step.literal === char) {
            next[position + 1] = 1;
            alive = true;
          }
        } else if (step.wildcard === 'any' || char !== '/') {
          next[position] = 1;
          alive = true;
        }
      }
      if (!alive) return false;
      close(next);
      active = next;
    }
    return active[size] === 1;
  };
}
