import { Counter as PromCounter, Gauge as PromGauge, Histogram as PromHistogram, Registry } from 'prom-client';
import type { Counter, Histogram, MetricLabels, Metrics } from '@tessera/plugin-sdk';

const METRIC_NAME = /^tessera_[a-z0-9_]+$/;
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/**
 * Prometheus metrics on a registry owned by one broker: prom-client's default registry is process-global,
 * and two brokers in one process must not count into each other.
 */
export class PromMetrics implements Metrics {
  readonly registry = new Registry();
  readonly #metrics = new Map<string, { kind: 'counter' | 'histogram'; labels: string; metric: Counter | Histogram }>();

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.#get(name, 'counter', labelNames, () => {
      const counter = new PromCounter({ name, help, labelNames: [...labelNames], registers: [this.registry] });
      return { inc: (labels: MetricLabels = {}, value = 1) => counter.inc(labels, value) };
    });
  }

  histogram(name: string, help: string, labelNames: readonly string[] = [], buckets: readonly number[] = LATENCY_BUCKETS): Histogram {
    return this.#get(name, 'histogram', labelNames, () => {
      const histogram = new PromHistogram({ name, help, labelNames: [...labelNames], buckets: [...buckets], registers: [this.registry] });
      return { observe: (labels: MetricLabels, value: number) => histogram.observe(labels, value) };
    });
  }

  /** A gauge read at scrape time (core only: plugins count and time, they do not report state). */
  gauge(name: string, help: string, read: () => number): void {
    if (!METRIC_NAME.test(name)) throw new TypeError(`metric name ${JSON.stringify(name)} must match ${METRIC_NAME.source}`);
    if (this.#metrics.has(name) || this.registry.getSingleMetric(name)) throw new TypeError(`metric ${name} is already registered`);
    new PromGauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }

  /** The view plugins get: the same registry, but core's own metric names are off limits. */
  forPlugins(reserved: readonly string[]): Metrics {
    const check = (name: string) => {
      if (reserved.includes(name)) throw new TypeError(`metric ${name} belongs to the broker`);
    };
    return {
      counter: (name, help, labelNames) => (check(name), this.counter(name, help, labelNames)),
      histogram: (name, help, labelNames, buckets) => (check(name), this.histogram(name, help, labelNames, buckets)),
    };
  }

  /** Prometheus text exposition format. */
  async exposition(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  #get<M extends Counter | Histogram>(name: string, kind: 'counter' | 'histogram', labelNames: readonly string[], create: () => M): M {
    if (!METRIC_NAME.test(name)) throw new TypeError(`metric name ${JSON.stringify(name)} must match ${METRIC_NAME.source}`);
    const labels = [...labelNames].sort().join(',');
    const existing = this.#metrics.get(name);
    if (existing) {
      if (existing.kind !== kind || existing.labels !== labels) throw new TypeError(`metric ${name} is already registered with another kind or labels`);
      return existing.metric as M;
    }
    const metric = create();
    this.#metrics.set(name, { kind, labels, metric });
    return metric;
  }
}
