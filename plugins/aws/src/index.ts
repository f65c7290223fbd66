import { definePlugin, tokens } from '@tessera/plugin-sdk';
import { AwsStsValidator } from './aws-sts-validator.js';
import { awsConfigSchema } from './config.js';

export { AwsStsValidator } from './aws-sts-validator.js';
export type { AwsStsValidatorDeps } from './aws-sts-validator.js';
export { awsConfigSchema, DEFAULT_AUDIENCE_HEADER, TOKEN_TYPE_AWS_STS, TOKEN_TYPE_STARFLY_AWS_STS } from './config.js';
export type { AwsConfig } from './config.js';
export type { SignedRequestEnvelope } from './signed-request.js';

export default definePlugin({
  name: 'aws',
  version: '0.1.0',
  apiVersion: '^1',
  description: 'Validates AWS IAM identities proven by a signed sts:GetCallerIdentity request; policy can match aws.account, aws.roleArn...',
  config: awsConfigSchema,
  deps: { replay: tokens.replayStore },
  init({ config, deps }) {
    return { validators: [new AwsStsValidator(config, deps)] };
  },
});
