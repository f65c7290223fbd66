import type { BrokerInfo } from '@tessera/plugin-sdk';

export interface MetadataInputs {
  readonly broker: BrokerInfo;
  readonly jwksUri: string;
  readonly grantTypes: readonly string[];
  readonly authMethods: readonly string[];
  readonly authSigningAlgorithms: readonly string[];
  readonly subjectTokenTypes: readonly string[];
  readonly issuedTokenTypes: readonly string[];
  /** Where RFC 7009 revocation is served; absent when the endpoint is disabled. */
  readonly revocationEndpoint?: string;
  /** Where RFC 7662 introspection is served; absent when the endpoint is disabled. */
  readonly introspectionEndpoint?: string;
}

/**
 * RFC 8414 §2 authorization server metadata, derived from what is actually configured and registered.
 * `subject_token_types_supported` and `issued_token_types_supported` are Tessera extensions: RFC 8693
 * defines no metadata for token types.
 */
export function authorizationServerMetadata(inputs: MetadataInputs): Record<string, unknown> {
  const usesAssertions = inputs.authMethods.includes('private_key_jwt');
  // Public clients (`none`) may not revoke or introspect: they prove nothing but an id every token carries.
  const revocationAuthMethods = inputs.authMethods.filter((method) => method !== 'none');
  return {
    issuer: inputs.broker.issuer,
    token_endpoint: inputs.broker.tokenEndpoint,
    jwks_uri: inputs.jwksUri,
    // Required by RFC 8414, yet a token broker has no authorization endpoint: empty on purpose.
    response_types_supported: [],
    grant_types_supported: inputs.grantTypes,
    token_endpoint_auth_methods_supported: inputs.authMethods,
    ...(usesAssertions ? { token_endpoint_auth_signing_alg_values_supported: inputs.authSigningAlgorithms } : {}),
    subject_token_types_supported: inputs.subjectTokenTypes,
    issued_token_types_supported: inputs.issuedTokenTypes,
    ...(inputs.revocationEndpoint
      ? {
          revocation_endpoint: inputs.revocationEndpoint,
          revocation_endpoint_auth_methods_supported: revocationAuthMethods,
          ...(usesAssertions ? { revocation_endpoint_auth_signing_alg_values_supported: inputs.authSigningAlgorithms } : {}),
        }
      : {}),
    ...(inputs.introspectionEndpoint
      ? {
          introspection_endpoint: inputs.introspectionEndpoint,
          introspection_endpoint_auth_methods_supported: revocationAuthMethods,
          ...(usesAssertions ? { introspection_endpoint_auth_signing_alg_values_supported: inputs.authSigningAlgorithms } : {}),
        }
      : {}),
  };
}
