/**
 * Loads the package's own .proto files (../proto, shipped with the package) at run time.
 */
import { fileURLToPath } from 'node:url';
import type { ServiceDefinition } from '@grpc/grpc-js';
import { loadSync, type Options } from '@grpc/proto-loader';

/** Absolute path of the shipped `proto/` folder (one level above both `src/` and `dist/`). */
export const PROTO_DIR = fileURLToPath(new URL('../proto/', import.meta.url));

export const WORKLOAD_SERVICE = 'SpiffeWorkloadAPI';
export const DELEGATED_SERVICE = 'spire.api.agent.delegatedidentity.v1.DelegatedIdentity';

/**
 * - keepCase: field names as on the wire (`spiffe_id`), matching the spec tables.
 * - longs: Number: the only int64 fields are unix seconds, exact in a double until year 285 million.
 * - defaults: proto3 omits empty fields; with defaults a missing string reads as `''`, not undefined.
 * - oneofs: google.protobuf.Value gets a `kind` naming its set member.
 */
const OPTIONS: Options = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] };

let services: { workload: ServiceDefinition; delegated: ServiceDefinition } | undefined;

/** The two service definitions, loaded once per process. */
export function serviceDefinitions(): { workload: ServiceDefinition; delegated: ServiceDefinition } {
  if (services === undefined) {
    const definition = loadSync(['workload.proto', 'spire/api/agent/delegatedidentity/v1/delegatedidentity.proto'], OPTIONS);
    services = {
      workload: definition[WORKLOAD_SERVICE] as ServiceDefinition,
      delegated: definition[DELEGATED_SERVICE] as ServiceDefinition,
    };
  }
  return services;
}
