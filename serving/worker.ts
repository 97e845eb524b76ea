/**
 * One serving worker: connects Redis (one connection for feeds, one in subscriber mode for live
 * pushes), starts the feed service and the HTTP + WebSocket server on
 * RECSYS_HTTP_HOST:RECSYS_SERVING_PORT (8080; RECSYS_HTTP_PORT overrides it).
 *
 * On SIGTERM/SIGINT it stops gracefully: the listen socket closes, in-flight requests finish,
 * WebSockets close with 1001 (going away), then the feed service (its served-log producer
 * flushes) and Redis close. `POST /v1/events` is served by the ingest role.
 */
import cluster from 'node:cluster';
import { createMetricsRegistry, type Config, type Logger } from '../core/index.js';
import { createRedis } from '../store/redis.js';
import { clusterMetricsText } from './cluster-metrics.js';
import { startFeedService } from './feed/service.js';
import { startServing } from './server.js';

export async function runWorker(config: Readonly<Config>, log: Logger): Promise<void> {
  const metrics = createMetricsRegistry('serving');
  // Feed requests issue a few commands each: those of one turn of the event loop go in one write.
  const redis = createRedis(config.redis.url, 'recsys-serving', { coalesceWrites: true });
  const subscriber = createRedis(config.redis.url, 'recsys-serving-live');
  // Errors surface through /readyz and the retrying subscription; without a listener ioredis
  // would print every failed reconnect as an unhandled error event.
  for (const r of [redis, subscriber]) {
    r.on('error', (err: Error) => log.warn({ err: err.message }, 'redis connection error'));
  }

  const feed = startFeedService({ config, log, metrics, redis });
  const serving = await startServing({
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

  let stopping = false;
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'stopping');
      (async () => {
        await serving.stop();
        await feed.close();
        await Promise.all([redis.quit(), subscriber.quit()].map((p) => p.catch(() => undefined)));
      })().then(
        () => process.exit(0),
        (err: Error) => {
          log.error({ err: err.message }, 'unclean stop');
          process.exit(1);
        },
      );
    });
  }
}
