import { compileGlob, type Matcher } from '@tessera/plugin-sdk';

export type { Matcher } from '@tessera/plugin-sdk';

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

/**
 * Compiles a resource id pattern, matched case-insensitively and anchored at both ends: `*` matches
 * within one `/` segment, `**` across segments.
 */
export function compileResourceIdPattern(pattern: string): Matcher {
  return compileGlob(pattern, RESOURCE_ID_GLOB);
}

const RESOURCE_ID_GLOB = { segmentStops: new Set(['/']), anyStops: new Set<string>(), ignoreCase: true };
