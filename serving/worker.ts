/**
 * One serving worker: connects Redis (one connection for feeds, one in subscriber mode for live
 * pushes), starts the feed service and the HTTP + WebSocket server on
 * RECSYS_HTTP_HOST:RECSYS_SERVING_PORT (8080; RECSYS_HTTP_PORT overrides it).
 *
 * On SIGTERM/SIGINT it stops gracefully within RECSYS_SHUTDOWN_TIMEOUT_MS (`core/shutdown.ts`;
 * a cluster worker keeps a tenth of it, at most 1 s, for its primary): the listen socket closes,
 * in-flight requests finish, WebSockets close with 1001 (going away), then the feed service (its
 * served-log producer flushes) and Redis close. `POST /v1/events` is served by the ingest role.
 */
import cluster from 'node:cluster';
import { createMetricsRegistry, onShutdown, type Config, type Logger } from '../core/index.js';
import { createRedis } from '../store/redis.js';
import { clusterMetricsText } from './cluster-metrics.js';
import { startFeedService } from './feed/service.js';
import { type Serving, startServing } from './server.js';

export async function runWorker(config: Readonly<Config>, log: Logger): Promise<void> {
  const metrics = createMetricsRegistry('serving');
  // Feed requests issue a few commands each: those of one turn of the event loop go in one write.
  const redis = createRedis(config.redis.url, 'recsys-serving', { coalesceWrites: true });
  const subscriber = createRedis(config.redis.url, 'recsys-serving-live', {
    shardedSubscriber: true,
  });
  // Errors surface through /readyz and the retrying subscription; without a listener ioredis
  // would print every failed reconnect as an unhandled error event.
  for (const r of [redis, subscriber]) {
    r.on('error', (err: Error) => log.warn({ err: err.message }, 'redis connection error'));
  }

  const feed = startFeedService({ config, log, metrics, redis });
  // Installed before the server starts: a SIGTERM during start-up stops it the same way.
  let serving: Serving | null = null;
  const total = config.shutdownTimeoutMs;
  onShutdown({
    log,
    timeoutMs: cluster.isWorker ? total - Math.min(1000, Math.floor(total / 10)) : total,
    steps: [
      { name: 'http and live sockets', run: (budget) => serving?.stop(budget) },
      { name: 'feed service (served log)', run: () => feed.close() },
      {
        name: 'redis',
        run: () =>
          Promise.all([redis.quit(), subscriber.quit()].map((p) => p.catch(() => undefined))),
      },
    ],
  });
  serving = await startServing({
    config,
    log,
    metrics,
    feed,
    redisSubscriber: subscriber,
    // Live sockets' per-user leases (one script per upgrade, not per feed).
    redis,
    // Several workers: /metrics answers for all of them (`cluster-metrics.ts`).
    ...(cluster.isWorker ? { metricsText: clusterMetricsText(metrics) } : {}),
  });
}
