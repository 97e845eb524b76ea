/**
 * `npm run batch`: the batch half of the feed, as steps that each print what they did and how
 * long it took:
 *
 *   [generate]  (with --generate N) synthetic events with planted structure into the lake
 *   etl         the lake into clean, sessionised, split tables (DuckDB; reruns overwrite)
 *   candidates  co-visitation neighbours, per-user candidates, popularity (train data only)
 *   ease        EASE item weights over the most interacted items (a rank feature; Python)
 *   train       LightGBM LambdaRank on features from the shared module, exported to ONNX
 *   evaluate    popularity, co-visitation only and the reranked hybrid on held-out users
 *   register    the model into the registry; promoted to champion only if it beats it (and the
 *               blend and co-visitation); a champion the blend surely beats is retired
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
  ABANDONED,
  assertPortFree,
  checkHealth,
  type Config,
  ConfigError,
  createHttpServer,
  createLogger,
  createMetricsRegistry,
  type HttpServer,
  listenPort,
  loadConfigOrExit,
  type Logger,
  onShutdown,
  RecsysError,
  type ShutdownBudget,
} from '../core/index.js';
import { createRedis, type RedisClient, redisHealth } from '../store/redis.js';
import { mountRetrainTrigger } from './retrain.js';
import { runBatch, type BatchRunOptions } from './run.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const config = loadConfigOrExit(process.env);
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

  await runLongLived(config, log, redis, options, { schedule, serve, port, variable });
}

/**
 * `--schedule` and/or `--serve`: one run at a time, whoever asks (the schedule or the webhook).
 * SIGTERM/SIGINT (`core/shutdown.ts`): no new run starts (the schedule stops, the webhook's port
 * closes); a run under way may finish within most of RECSYS_SHUTDOWN_TIMEOUT_MS, else it is
 * abandoned (exit 124): no further step starts and the Python training is killed; every step is
 * idempotent, so the next run redoes the work.
 */
async function runLongLived(
  config: Readonly<Config>,
  log: Logger,
  redis: RedisClient,
  options: BatchRunOptions,
  mode: { schedule: boolean; serve: boolean; port: number; variable: string },
): Promise<void> {
  const metrics: Registry = createMetricsRegistry('batch');
  const lastRun = new Gauge({
    name: 'recsys_batch_last_success_timestamp_seconds',
    help: 'when the last batch run finished successfully',
    registers: [metrics],
  });
  let running: Promise<void> | null = null;
  let abandon: AbortController | null = null;
  let job: Cron | null = null;
  let server: HttpServer | null = null;
  const shutdown = onShutdown({
    log,
    timeoutMs: config.shutdownTimeoutMs,
    steps: [
      {
        name: 'triggers',
        run: () => {
          job?.stop();
          server?.close();
        },
      },
      { name: 'batch run', run: (budget) => finishOrAbandon(budget) },
      { name: 'redis', run: () => redis.quit() },
    ],
  });
  const once = (): Promise<void> => {
    if (shutdown.stopping) return Promise.resolve();
    if (running) return running;
    const controller = new AbortController();
    abandon = controller;
    running = runBatch(config, log, redis, {
      ...options,
      generateEvents: undefined,
      signal: controller.signal,
    })
      .then(() => lastRun.setToCurrentTime())
      .catch((err: Error) => {
        if (controller.signal.aborted) {
          log.warn({ err: err.message }, 'batch run abandoned; the next run redoes it');
        } else log.error({ err: err.message }, 'batch run failed');
      })
      .finally(() => (running = null));
    return running;
  };
  /** Lets a run under way finish within most of the budget, else abandons it. */
  const finishOrAbandon = async (budget: ShutdownBudget): Promise<typeof ABANDONED | undefined> => {
    const run = running;
    if (!run) return undefined;
    const remaining = budget.remainingMs();
    const waitMs = Math.max(0, remaining - Math.min(2000, remaining * 0.2));
    log.info({ waitMs }, 'waiting for the batch run under way');
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      run.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), waitMs))),
    ]);
    clearTimeout(timer);
    if (finished) return undefined;
    abandon?.abort(new Error('shutdown: the batch run is abandoned'));
    await run;
    return ABANDONED;
  };
  if (mode.schedule) {
    if (!config.batch.schedule)
      throw new Error('--schedule needs RECSYS_BATCH_SCHEDULE (a cron expression)');
    job = new Cron(config.batch.schedule, { protect: true }, () => void once());
    log.info(
      { schedule: config.batch.schedule, next: job.nextRun()?.toISOString() },
      'batch scheduled',
    );
  }
  if (mode.serve) {
    server = createHttpServer({
      host: config.http.host,
      port: mode.port,
      portVariable: mode.variable,
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
