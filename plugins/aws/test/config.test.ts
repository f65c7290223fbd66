import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { awsConfigSchema, TOKEN_TYPE_AWS_STS, TOKEN_TYPE_STARFLY_AWS_STS } from '../src/index.js';
import { compileRoleArnPattern, parseCallerArn } from '../src/arn.js';
import { allowedEndpoints } from '../src/config.js';

const parse = (config: Record<string, unknown>) => awsConfigSchema.safeParse({ accounts: ['123456789012'], ...config });

describe('config', () => {
  it('requires an account allow-list: anyone can sign a valid GetCallerIdentity', () => {
    expect(awsConfigSchema.safeParse({}).success).toBe(false);
    expect(awsConfigSchema.safeParse({ accounts: [] }).success).toBe(false);
    expect(awsConfigSchema.safeParse({ accounts: ['12345'] }).success).toBe(false);
  });

  it('defaults to the global endpoint, both token types, a single-use 5-minute window', () => {
    const config = awsConfigSchema.parse({ accounts: ['123456789012'] });
    expect(config).toMatchObject({ globalEndpoint: true, singleUse: true, maxAgeSeconds: 300, audienceHeader: 'x-tessera-audience', allowIamUsers: false });
    expect(config.tokenTypes).toEqual([TOKEN_TYPE_AWS_STS, TOKEN_TYPE_STARFLY_AWS_STS]);
    expect([...allowedEndpoints(config).values()]).toEqual([{ origin: 'https://sts.amazonaws.com', host: 'sts.amazonaws.com', region: 'us-east-1', partition: 'aws' }]);
  });

  it('derives regional endpoints with their partitions', () => {
    const config = awsConfigSchema.parse({ accounts: ['123456789012'], globalEndpoint: false, regions: ['eu-west-1', 'cn-northwest-1', 'us-gov-west-1'] });
    expect([...allowedEndpoints(config).values()].map(({ origin, partition }) => [origin, partition])).toEqual([
      ['https://sts.eu-west-1.amazonaws.com', 'aws'],
      ['https://sts.cn-northwest-1.amazonaws.com.cn', 'aws-cn'],
      ['https://sts.us-gov-west-1.amazonaws.com', 'aws-us-gov'],
    ]);
  });

  it('needs at least one endpoint', () => {
    expect(parse({ globalEndpoint: false }).success).toBe(false);
  });

  it('takes explicit endpoints as bare https origins, plain http only on loopback', () => {
    expect(parse({ endpoints: [{ url: 'https://sts-fips.us-east-1.amazonaws.com', region: 'us-east-1' }] }).success).toBe(true);
    expect(parse({ endpoints: [{ url: 'http://127.0.0.1:4566', region: 'us-east-1' }] }).success).toBe(true);
    expect(parse({ endpoints: [{ url: 'http://[::1]:4566/', region: 'us-east-1' }] }).success).toBe(true);
    for (const url of ['http://sts.internal:4566', 'https://sts.amazonaws.com/path', 'https://sts.amazonaws.com/?a=b', 'https://u:p@sts.amazonaws.com', 'ftp://sts.amazonaws.com', 'sts.amazonaws.com']) {
      expect(parse({ endpoints: [{ url, region: 'us-east-1' }] }).success, url).toBe(false);
    }
    expect(parse({ endpoints: [{ url: 'https://sts.amazonaws.com', region: 'global' }] }).success).toBe(false);
  });

  it('refuses role patterns with a path, which would never match an assumed role', () => {
    expect(parse({ roleArns: ['arn:aws:iam::123456789012:role/deploy-*'] }).success).toBe(true);
    expect(parse({ roleArns: ['arn:aws:iam::*:role/ci'] }).success).toBe(true);
    const withPath = parse({ roleArns: ['arn:aws:iam::123456789012:role/service-role/deployer'] });
    expect(withPath.success).toBe(false);
    expect(JSON.stringify(withPath.error?.issues)).toContain('no role path');
    expect(parse({ roleArns: ['arn:aws:sts::123456789012:assumed-role/deployer/x'] }).success).toBe(false);
    expect(parse({ roleArns: [] }).success).toBe(false);
  });

  it('caps the window at the 15 minutes AWS accepts signed requests for', () => {
    expect(parse({ maxAgeSeconds: 900 }).success).toBe(true);
    expect(parse({ maxAgeSeconds: 901 }).success).toBe(false);
  });

  it('publishes a JSON Schema', () => {
    const schema = z.toJSONSchema(awsConfigSchema, { io: 'input', target: 'draft-2020-12' }) as { required?: string[]; properties: Record<string, unknown> };
    expect(schema.required).toEqual(['accounts']);
    expect(Object.keys(schema.properties)).toContain('roleArns');
  });
});

describe('caller ARNs', () => {
  it('normalizes an assumed role to the role ARN, in any partition', () => {
    expect(parseCallerArn('arn:aws-us-gov:sts::123456789012:assumed-role/deployer/i-0abc')).toEqual({
      kind: 'assumed-role',
      partition: 'aws-us-gov',
      account: '123456789012',
      roleArn: 'arn:aws-us-gov:iam::123456789012:role/deployer',
      roleName: 'deployer',
      sessionName: 'i-0abc',
    });
    expect(parseCallerArn('arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Admin_0123/alice@example.com')).toMatchObject({ roleName: 'AWSReservedSSO_Admin_0123', sessionName: 'alice@example.com' });
  });

  it('keeps IAM user paths', () => {
    expect(parseCallerArn('arn:aws:iam::123456789012:user/eng/platform/alice')).toEqual({
      kind: 'user',
      partition: 'aws',
      account: '123456789012',
      userArn: 'arn:aws:iam::123456789012:user/eng/platform/alice',
      userName: 'alice',
    });
  });

  it('sets apart kinds it does not accept, and what is no ARN', () => {
    expect(parseCallerArn('arn:aws:iam::123456789012:root')).toEqual({ kind: 'unsupported', type: 'root' });
    expect(parseCallerArn('arn:aws:sts::123456789012:federated-user/bob')).toEqual({ kind: 'unsupported', type: 'federated-user' });
    expect(parseCallerArn('arn:aws:iam::123456789012:role/deployer')).toEqual({ kind: 'unsupported', type: 'role' });
    expect(parseCallerArn('arn:aws:sts::123456789012:user/moto')).toEqual({ kind: 'unsupported', type: 'user' });
    for (const arn of [
      'arn:aws:sts::123456789012:assumed-role/deployer',
      'arn:aws:sts::123456789012:assumed-role/deployer/s/extra',
      'arn:aws:sts:us-east-1:123456789012:assumed-role/deployer/s',
      'arn:aws:sts::12345:assumed-role/deployer/s',
      'arn:evil:sts::123456789012:assumed-role/deployer/s',
      'arn:aws:sts::123456789012:assumed-role/deploy er/s',
      'arn:aws:iam::123456789012:user/',
      'arn:aws:sts::123456789012',
      '',
    ]) {
      expect(parseCallerArn(arn), arn).toBeUndefined();
    }
  });
});

describe('role ARN patterns', () => {
  it('match whole ARNs, `*` within one field only', () => {
    const match = compileRoleArnPattern('arn:aws:iam::*:role/deploy-*');
    expect(match('arn:aws:iam::123456789012:role/deploy-web')).toBe(true);
    expect(match('arn:aws:iam::123456789012:role/deploy-')).toBe(true);
    expect(match('arn:aws:iam::123456789012:role/admin')).toBe(false);
    expect(match('arn:aws:iam::123456789012:role/deploy-web/extra')).toBe(false);
    expect(match('arn:aws:iam::1:2:role/deploy-x')).toBe(false);
    expect(compileRoleArnPattern('arn:aws:iam::123456789012:role/a.b')('arn:aws:iam::123456789012:role/aXb')).toBe(false);
  });
});
