/**
 * One Prometheus registry per process, passed down from the entry point: default process
 * metrics plus what each component registers on it. Names follow Prometheus conventions with
 * the `recsys_` prefix, base units and `_total` counters.
 */
import { collectDefaultMetrics, Registry } from 'prom-client';

export { Registry };

export function createMetricsRegistry(role: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ role });
  collectDefaultMetrics({ register: registry, prefix: 'recsys_' });
  return registry;
}
