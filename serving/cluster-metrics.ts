/**
 * `/metrics` for a server of several worker processes (RECSYS_SERVING_WORKERS > 1). The kernel
 * hands each connection to any worker, so a scrape answered from the worker's own registry
 * would show a different process's counters each time. Instead the worker that gets the scrape
 * asks the primary, which collects every worker's registry (prom-client's AggregatorRegistry:
 * counters and histograms summed, default process gauges aggregated per their own rule) and
 * answers with the whole server's metrics.
 *
 * @example
 *   // primary
 *   startMetricsAggregator(log);
 *   // worker
 *   const metricsText = clusterMetricsText(registry); // for createHttpServer({ metricsText })
 */
import cluster from 'node:cluster';
import { AggregatorRegistry, type Registry } from 'prom-client';
import type { Logger } from '../core/index.js';

const REQUEST = 'recsys:metrics-request';
const REPLY = 'recsys:metrics-reply';

interface Request {
  type: typeof REQUEST;
  id: number;
}
interface Reply {
  type: typeof REPLY;
  id: number;
  text?: string;
  error?: string;
}

/** In the primary: answers workers' requests with the aggregated metrics of all workers. */
export function startMetricsAggregator(log: Logger): void {
  const aggregator = new AggregatorRegistry();
  cluster.on('message', (worker, message: unknown) => {
    const m = message as Partial<Request> | null;
    if (m?.type !== REQUEST || typeof m.id !== 'number') return;
    const id = m.id;
    aggregator.clusterMetrics().then(
      (text) => worker.send({ type: REPLY, id, text } satisfies Reply),
      (err: Error) => {
        log.warn({ err: err.message }, 'aggregating worker metrics failed');
        worker.send({ type: REPLY, id, error: err.message } satisfies Reply);
      },
    );
  });
}

/**
 * In a worker: registers `registry` as the one the primary collects, and returns the function
 * `/metrics` answers with (the aggregated text, from the primary; rejects after `timeoutMs`).
 */
export function clusterMetricsText(registry: Registry, timeoutMs = 5000): () => Promise<string> {
  AggregatorRegistry.setRegistries([registry]);
  // Constructing one installs prom-client's worker-side listener that answers the primary.
  new AggregatorRegistry();
  let next = 0;
  const pending = new Map<number, (reply: Reply) => void>();
  process.on('message', (message: unknown) => {
    const m = message as Partial<Reply> | null;
    if (m?.type === REPLY && typeof m.id === 'number') pending.get(m.id)?.(m as Reply);
  });
  return () =>
    new Promise<string>((resolve, reject) => {
      const id = next++;
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`no metrics from the primary within ${timeoutMs} ms`));
      }, timeoutMs);
      pending.set(id, (reply) => {
        clearTimeout(timer);
        pending.delete(id);
        if (reply.text !== undefined) resolve(reply.text);
        else reject(new Error(reply.error ?? 'metrics aggregation failed'));
      });
      process.send?.({ type: REQUEST, id } satisfies Request);
    });
}
