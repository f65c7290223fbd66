import { describe, expect, it } from 'vitest';
import { PromMetrics } from '../src/metrics.js';

describe('PromMetrics', () => {
  it('keeps each broker’s counts apart', async () => {
    const first = new PromMetrics();
    const second = new PromMetrics();
    first.counter('tessera_things_total', 'Things', ['kind']).inc({ kind: 'a' });
    second.counter('tessera_things_total', 'Things', ['kind']);
    expect((await first.exposition()).body).toContain('tessera_things_total{kind="a"} 1');
    expect((await second.exposition()).body).not.toContain('kind="a"');
  });

  it('returns the same metric for the same name and refuses a clash', () => {
    const metrics = new PromMetrics();
    const counter = metrics.counter('tessera_x_total', 'X', ['a', 'b']);
    expect(metrics.counter('tessera_x_total', 'X', ['b', 'a'])).toBe(counter);
    expect(() => metrics.histogram('tessera_x_total', 'X', ['a', 'b'])).toThrow(/another kind or labels/);
    expect(() => metrics.counter('tessera_x_total', 'X', ['a'])).toThrow(/another kind or labels/);
  });

  it('accepts only tessera_ names', () => {
    const metrics = new PromMetrics();
    expect(() => metrics.counter('process_cpu_seconds_total', 'clash with a standard metric')).toThrow(/must match/);
    expect(() => metrics.histogram('tessera_Bad-Name', 'x')).toThrow(/must match/);
  });
});

describe('the plugin view', () => {
  it('shares the registry but keeps the broker’s own metric names', async () => {
    const metrics = new PromMetrics();
    const view = metrics.forPlugins(['tessera_token_requests_total']);
    expect(() => view.counter('tessera_token_requests_total', 'x', ['endpoint'])).toThrow(/belongs to the broker/);
    view.counter('tessera_plugin_calls_total', 'Calls').inc();
    expect((await metrics.exposition()).body).toContain('tessera_plugin_calls_total 1');
  });
});
