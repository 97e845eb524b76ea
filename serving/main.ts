/**
 * The serving process: `node dist/serving/main.js` (`npm run serve`). Reads the configuration,
 * connects Redis (one connection for feeds, one in subscriber mode for live pushes), starts the
 * feed service and the HTTP + WebSocket server on RECSYS_HTTP_HOST:RECSYS_HTTP_PORT.
 *
 * On SIGTERM/SIGINT it stops gracefully: the listen socket closes, in-flight requests finish,
 * WebSockets close with 1001 (going away), then the feed service (its served-log producer
 * flushes) and Redis close. `POST /v1/events` is served by the stream process (ingest role).
 */
import cluster from 'node:cluster';
import { createLogger, createMetricsRegistry, loadConfig } from '../core/index.js';
import { clusterMetricsText, startMetricsAggregator } from './cluster-metrics.js';

const config = loadConfig(process.env);
const log = createLogger(config.logLevel, 'recsys-serving');

// With RECSYS_SERVING_WORKERS > 1 this process only supervises: it forks that many copies, each
// listening on the same port (uWS sets SO_REUSEPORT, the kernel spreads connections), restarts
// one that dies, passes SIGTERM on, and aggregates the workers' metrics for /metrics. One Node
// process tops out near one core.
if (config.serving.workers > 1 && cluster.isPrimary) {
  // Two V8 options for the workers, each unless already given (in execArgv or NODE_OPTIONS):
  // - a young generation of 8 MB semi-spaces instead of V8's 16: a feed allocates some 50 KB,
  //   all short-lived, and the larger space mostly held garbage. In `npm run bench:serve` with
  //   2 workers and 10,000 sockets: 557 -> 503 MiB resident, with the same server CPU per feed;
  // - one V8 platform thread instead of 4 (garbage collection helpers, compilation): on a small
  //   host the workers wait for a core (at 2,000 feeds/s their main threads waited 0.4-0.5 s
  //   in the run queue per second of running), and every scavenge woke 4 helpers per worker.
  //   bench:serve, 4 alternating rounds each: p99 at 2,000/s 9.7-16.8 -> 5.8-8.5 ms, at
  //   1,000/s 4.1-9.4 -> 3.6-4.7 ms; the same server CPU and 5,000/s peak.
  const given = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].join(' ');
  const defaults = ['--max-semi-space-size=8', '--v8-pool-size=1'].filter(
    (flag) => !given.includes(flag.split('=')[0] as string),
  );
  if (defaults.length > 0) cluster.setupPrimary({ execArgv: [...process.execArgv, ...defaults] });
  let stopping = false;
  const fork = (): void => {
    cluster.fork().once('exit', (code, signal) => {
      if (stopping) return;
      log.error({ code, signal }, 'serving worker died; starting another');
      setTimeout(fork, 500);
    });
  };
  startMetricsAggregator(log);
  for (let i = 0; i < config.serving.workers; i++) fork();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.on(sig, () => {
      stopping = true;
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill(sig);
      const check = setInterval(() => {
        if (Object.keys(cluster.workers ?? {}).length === 0) {
          clearInterval(check);
          process.exit(0);
        }
      }, 50);
    });
  }
} else {
  await serve();
}

async function serve(): Promise<void> {
  // Imported here, not at the top: a supervising primary never loads ONNX Runtime, uWS or the
  // Kafka client (some 80 MB of resident memory it has no use for).
  const { createRedis } = await import('../store/redis.js');
  const { startFeedService } = await import('./feed.js');
  const { startServing } = await import('./server.js');
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
