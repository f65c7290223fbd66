import { z } from 'zod';

export const TRACING_DEFAULTS = {
  exporter: 'none' as const,
  protocol: 'http/protobuf' as const,
  serviceName: 'tessera',
  sampleRatio: 1,
  headers: {},
};

export const tracingConfigSchema = z
  .object({
    exporter: z.enum(['none', 'otlp']).default(TRACING_DEFAULTS.exporter).describe('none: no spans leave the process; otlp: export over OTLP/HTTP'),
    endpoint: z
      .url({ protocol: /^https?$/, error: 'must be an http or https URL' })
      .optional()
      .describe('OTLP/HTTP traces endpoint, e.g. http://otel-collector:4318/v1/traces (default: the exporter\'s, http://localhost:4318/v1/traces)'),
    protocol: z.enum(['http/protobuf', 'http/json']).default(TRACING_DEFAULTS.protocol).describe('OTLP encoding of the exported spans'),
    serviceName: z.string().min(1).max(256).default(TRACING_DEFAULTS.serviceName).describe('service.name of the exported resource'),
    sampleRatio: z
      .number()
      .min(0)
      .max(1)
      .default(TRACING_DEFAULTS.sampleRatio)
      .describe('Share of traces started here that are recorded; a request with a traceparent follows its caller\'s sampling decision'),
    headers: z
      .record(
        z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'must be an HTTP header name'),
        // Collector credentials (an API key, a bearer token) go here: `config print` shows names only.
        z.string().meta({ secret: true }),
      )
      .default(TRACING_DEFAULTS.headers)
      .describe('HTTP headers sent with every export, e.g. an API key for the collector'),
  })
  .strict()
  .default(TRACING_DEFAULTS)
  .describe('OpenTelemetry tracing of tessera serve: a span per request and per step (client authentication, validation, policy, issuing, outbound fetches); restart-only');

export type TracingConfig = z.output<typeof tracingConfigSchema>;
