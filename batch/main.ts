/**
 * `npm run batch`: the batch half of the feed, as steps that each print what they did and how
 * long it took:
 *
 *   [generate]  (with --generate N) synthetic events with planted structure into the lake
 *   etl         the lake into clean, sessionised, split tables (DuckDB; reruns overwrite)
 *   candidates  co-visitation neighbours, per-user candidates, popularity (train data only)
 *   train       LightGBM LambdaRank on features from the shared module, exported to ONNX
 *   evaluate    popularity, co-visitation only and the reranked hybrid on held-out users
 *   register    the model into the registry; promoted to champion only if it beats it
 *   publish     candidates into Redis under a new version, switched in with one pointer
 *
 * Every step is idempotent: a rerun overwrites its files, registers a new model version (never
 * promoted unless better) and publishes a new candidate version (older ones expire).
 *
 * Modes: once (default); `--schedule` runs on RECSYS_BATCH_SCHEDULE (cron); `--serve` also
 * listens on RECSYS_BATCH_PORT (8095) for the Alertmanager retrain webhook
 * (`POST /v1/admin/retrain`, bearer RECSYS_RETRAIN_TOKEN, which `--serve` requires), with
 * /healthz, /readyz and /metrics. The steps themselves are `run.ts`.
 */
import { resolve } from 'node:path';
import { Cron } from 'croner';
import { Gauge, type Registry } from 'prom-client';
import {
  assertPortFree,
  checkHealth,
  ConfigError,
  createHttpServer,
  createLogger,
  createMetricsRegistry,
  listenPort,
  loadConfig,
  RecsysError,
} from '../core/index.js';
import { createRedis, redisHealth } from '../store/redis.js';
import { mountRetrainTrigger } from './retrain.js';
import { runBatch, type BatchRunOptions } from './run.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const config = loadConfig(process.env);
  const log = createLogger(config.logLevel, 'recsys-batch');
  const redis = createRedis(config.redis.url, 'recsys-batch');
  const options: BatchRunOptions = {
    generateEvents: arg('--generate') ? Number(arg('--generate')) : undefined,
    seed: arg('--seed') ? Number(arg('--seed')) : undefined,
  };
  const schedule = process.argv.includes('--schedule');
  const serve = process.argv.includes('--serve');
  const { port, variable } = listenPort(config, 'batch');
  if (serve) {
    // Checked before anything runs: an open retrain endpoint would let anyone start batches.
    if (!config.batch.retrainToken) {
      throw new ConfigError('RECSYS_RETRAIN_TOKEN', '`--serve` needs the webhook bearer token set');
    }
    await assertPortFree(config.http.host, port, variable);
  }
  if (!schedule && !serve) {
    const t0 = performance.now();
    const r = await runBatch(config, log, redis, options);
    process.stdout.write(`batch done in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    redis.disconnect();
    process.exit(r.model.version ? 0 : 1);
  }

  // Long-running: one run at a time, whoever asks (the schedule or the webhook).
  const metrics: Registry = createMetricsRegistry('batch');
  const lastRun = new Gauge({
    name: 'recsys_batch_last_success_timestamp_seconds',
    help: 'when the last batch run finished successfully',
    registers: [metrics],
  });
  let running: Promise<void> | null = null;
  const once = (): Promise<void> => {
    running ??= runBatch(config, log, redis, { ...options, generateEvents: undefined })
      .then(() => lastRun.setToCurrentTime())
      .catch((err: Error) => log.error({ err: err.message }, 'batch run failed'))
      .finally(() => (running = null));
    return running;
  };
  if (schedule) {
    if (!config.batch.schedule)
      throw new Error('--schedule needs RECSYS_BATCH_SCHEDULE (a cron expression)');
    const job = new Cron(config.batch.schedule, { protect: true }, () => void once());
    log.info(
      { schedule: config.batch.schedule, next: job.nextRun()?.toISOString() },
      'batch scheduled',
    );
  }
  if (serve) {
    const server = createHttpServer({
      host: config.http.host,
      port,
      portVariable: variable,
      log,
      metrics,
      readiness: () =>
        checkHealth(
          { redis: () => redisHealth(redis, config.healthTimeoutMs) },
          config.healthTimeoutMs,
        ),
    });
    mountRetrainTrigger(server.app, {
      onTrigger: once,
      log,
      metrics,
      token: config.batch.retrainToken,
      minIntervalMs: 15 * 60_000,
    });
    await server.listen();
  }
  log.info(
    { lake: resolve(config.lake.dir) },
    'batch waiting for its schedule or a retrain trigger',
  );
}

await main().catch((err: Error) => {
  // Ours (config, a port in use) say what to do; anything else keeps its stack.
  process.stderr.write(`batch: ${err instanceof RecsysError ? err.message : err.stack}\n`);
  process.exit(1);
});
