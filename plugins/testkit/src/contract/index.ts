export { describeValidatorContract } from './validator-contract.js';
export type { MintRequest, ValidatorContractOptions, ValidatorFixture } from './validator-contract.js';
export { describeIssuerContract } from './issuer-contract.js';
export type { IssuerFixture } from './issuer-contract.js';
export { startContractBroker, CONTRACT_CLIENT_ID } from './harness.js';
export type { ContractBroker, ContractBrokerOptions, PluginUnderTest } from './harness.js';
export { GARBAGE_TOKENS, leakedFragments, tamperJwsSignature } from './tokens.js';
