import { context, diag, DiagLogLevel, propagation, trace } from '@opentelemetry/api';
import type { Logger } from '@tessera/plugin-sdk';
import type { TracingConfig } from '../config/tracing-schema.js';
import { CORE_VERSION } from './tracing.js';

/** Flushes the spans still buffered, then unregisters the SDK. */
export type StopTracing = () => Promise<void>;

/** Exports get this long, at shutdown too: a collector that is down must not hold the process up. */
const EXPORT_TIMEOUT_MS = 5_000;

/**
 * Registers the OpenTelemetry SDK for this process when `tracing.exporter` says so: a tracer provider
 * with a parent-based ratio sampler and a batch OTLP/HTTP exporter, the AsyncLocalStorage context
 * manager and the W3C trace-context propagator. The SDK is imported here only, so a host embedding
 * `@tessera/core` loads just the API and keeps its own SDK, or none.
 */
export async function startTracing(config: TracingConfig, log: Logger): Promise<StopTracing> {
  if (config.exporter === 'none') return async () => undefined;
  const [sdk, { AsyncLocalStorageContextManager }, { W3CTraceContextPropagator }, { resourceFromAttributes }, otlp] = await Promise.all([
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/context-async-hooks'),
    import('@opentelemetry/core'),
    import('@opentelemetry/resources'),
    config.protocol === 'http/json' ? import('@opentelemetry/exporter-trace-otlp-http') : import('@opentelemetry/exporter-trace-otlp-proto'),
  ]);
  const exporter = new otlp.OTLPTraceExporter({ ...(config.endpoint ? { url: config.endpoint } : {}), headers: { ...config.headers }, timeoutMillis: EXPORT_TIMEOUT_MS });
  const provider = new sdk.TracerProvider({
    resource: resourceFromAttributes({ 'service.name': config.serviceName, 'service.version': CORE_VERSION }),
    sampler: new sdk.ParentBasedSampler({ root: new sdk.TraceIdRatioBasedSampler(config.sampleRatio) }),
    spanProcessors: [new sdk.BatchSpanProcessor({ exporter, exportTimeoutMillis: EXPORT_TIMEOUT_MS })],
  });
  // Failed exports are reported through diag; without this they would vanish.
  diag.setLogger(
    {
      error: (message) => log.warn({ message }, 'tracing: export problem'),
      warn: (message) => log.warn({ message }, 'tracing: export problem'),
      info: () => undefined,
      debug: () => undefined,
      verbose: () => undefined,
    },
    { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true },
  );
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  const endpoint = config.endpoint ? new URL(config.endpoint) : undefined;
  log.info(
    { protocol: config.protocol, sampleRatio: config.sampleRatio, ...(endpoint ? { endpoint: `${endpoint.origin}${endpoint.pathname}` } : {}) },
    'tracing: exporting spans over OTLP',
  );
  return async () => {
    try {
      await provider.shutdown();
    } catch (error) {
      log.warn({ err: error instanceof Error ? error.message : String(error) }, 'tracing: the last spans could not be exported');
    }
    trace.disable();
    propagation.disable();
    context.disable();
    diag.disable();
  };
}
