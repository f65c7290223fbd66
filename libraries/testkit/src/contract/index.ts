export { describeValidatorContract, ECHO_ISSUER } from './validator-contract.js';
export { TOKEN_TYPE_CONTRACT_ECHO } from './echo-issuer.js';
export type { MintRequest, ValidatorContractOptions, ValidatorFixture } from './validator-contract.js';
export { describeIssuerContract } from './issuer-contract.js';
export type { IssuerFixture } from './issuer-contract.js';
export { startContractBroker, CONTRACT_CLIENT_ID } from './harness.js';
export type { ContractBroker, ContractBrokerOptions, PluginUnderTest } from './harness.js';
export { GARBAGE_TOKENS, leakedFragments, tamperJwsSignature } from './tokens.js';
