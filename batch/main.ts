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
 * listens on RECSYS_HTTP_PORT for the Alertmanager retrain webhook (`POST /v1/admin/retrain`),
 * with /healthz, /readyz and /metrics.
 */
import { join, resolve } from 'node:path';
import { Cron } from 'croner';
import type { Redis } from 'ioredis';
import { Gauge, type Registry } from 'prom-client';
import {
  checkHealth,
  type Config,
  createHttpServer,
  createLogger,
  createMetricsRegistry,
  loadConfig,
  type Logger,
} from '../core/index.js';
import { createRedis, redisHealth } from '../store/redis.js';
import { buildCandidates } from './candidates.js';
import { runEtl } from './etl.js';
import { generate } from './generate.js';
import { publishCandidates } from './publish.js';
import { openRegistry } from '../store/registry/index.js';
import { trainAndEvaluate } from './rerank.js';
import { mountRetrainTrigger } from './retrain.js';

export interface BatchRunOptions {
  /** Generate this many synthetic events into the lake first. */
  generateEvents?: number;
  /** Seed of the generator. @default 1 */
  seed?: number;
  /** Users in reranker training and evaluation. */
  maxUsers?: number;
  /** LightGBM parameters over train.py's defaults. */
  params?: Record<string, unknown>;
}

export interface BatchRunResult {
  stepsMs: Record<string, number>;
  metrics: Awaited<ReturnType<typeof trainAndEvaluate>>['metrics'];
  model: { version: string; promoted: boolean; reason: string };
  candidatesVersion: number;
  report: string;
}

/** Runs every step once; `progress` gets one line per step. */
export async function runBatch(
  config: Readonly<Config>,
  log: Logger,
  redis: Redis,
  options: BatchRunOptions = {},
  progress: (line: string) => void = (line) => process.stdout.write(line + '\n'),
): Promise<BatchRunResult> {
  const stepsMs: Record<string, number> = {};
  const step = async <T>(name: string, fn: () => Promise<T>, say: (r: T) => string): Promise<T> => {
    const t0 = performance.now();
    progress(`[${name}] ...`);
    const r = await fn();
    stepsMs[name] = Math.round(performance.now() - t0);
    progress(`[${name}] ${say(r)} (${(stepsMs[name] / 1000).toFixed(1)} s)`);
    return r;
  };
  const catalogPath = join(config.batch.dir, 'catalog.jsonl');
  if (options.generateEvents) {
    await step(
      'generate',
      () =>
        generate({
          seed: options.seed ?? 1,
          events: options.generateEvents,
          endTs: Date.now(),
          lakeDir: config.lake.dir,
          topic: config.kafka.topics.events,
          catalogPath,
          redis,
          log,
        }),
      (r) =>
        `${r.events} events, ${r.users} users, ${r.items} items, ${r.plantedPairs.length} planted pairs`,
    );
  }
  const etl = await step(
    'etl',
    () => runEtl(config, log, { catalogPath }),
    (r) =>
      `${r.counts.events} events (${r.counts.duplicates} duplicates dropped), ${r.counts.users} users, ${r.counts.sessions} sessions, cut-off ${new Date(r.cutoffTs).toISOString()}`,
  );
  const cands = await step(
    'candidates',
    () => buildCandidates(config, log, etl),
    (r) =>
      `${r.counts.neighbours} neighbour pairs over ${r.counts.itemsWithNeighbours} items, ${r.counts.userCandidates} user candidates for ${r.counts.users} users`,
  );
  const ranked = await step(
    'train+evaluate',
    () =>
      trainAndEvaluate(config, log, redis, etl, cands, {
        maxUsers: options.maxUsers,
        params: options.params,
      }),
    (r) =>
      `${r.users.train} training queries, ${r.users.eval} evaluation users; NDCG@10 popularity ${r.metrics.popularity.ndcg_at_10.toFixed(4)}, co-visitation ${r.metrics.covisitation.ndcg_at_10.toFixed(4)}, hybrid ${r.metrics.hybrid.ndcg_at_10.toFixed(4)}`,
  );
  const registry = openRegistry(config.batch, log);
  const model = await step(
    'register',
    async () => {
      try {
        const metrics = { ...ranked.metrics.hybrid };
        const { version } = await registry.register({
          onnxPath: ranked.train.onnxPath,
          metrics: {
            ndcg_at_10: metrics.ndcg_at_10,
            recall_at_20: metrics.recall_at_20,
            mrr_at_20: metrics.mrr_at_20,
            hit_rate_at_10: metrics.hit_rate_at_10,
            coverage_at_10: metrics.coverage_at_10,
            covisitation_ndcg_at_10: ranked.metrics.covisitation.ndcg_at_10,
            popularity_ndcg_at_10: ranked.metrics.popularity.ndcg_at_10,
          },
          params: {
            objective: 'lambdarank',
            evalUsers: ranked.users.eval,
            trainQueries: ranked.users.train,
          },
        });
        const decision = await registry.promoteIfBetter(
          version,
          metrics as unknown as Record<string, number>,
          {
            minNdcg: config.batch.minNdcg,
          },
        );
        return { version, promoted: decision.promoted, reason: decision.reason };
      } finally {
        await registry.close();
      }
    },
    (r) =>
      `version ${r.version} ${r.promoted ? 'promoted to champion' : 'registered, not promoted'}: ${r.reason}`,
  );
  const published = await step(
    'publish',
    () => publishCandidates(config, redis, log, cands),
    (r) =>
      `candidates version ${r.version} live (previous ${r.previous ?? 'none'}), retired ${r.retired.length}`,
  );
  progress(`report: ${ranked.report.markdown}`);
  return {
    stepsMs,
    metrics: ranked.metrics,
    model,
    candidatesVersion: published.version,
    report: ranked.report.markdown,
  };
}

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
      port: config.http.port,
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
      minIntervalMs: 15 * 60_000,
    });
    await server.listen();
  }
  log.info(
    { lake: resolve(config.lake.dir) },
    'batch waiting for its schedule or a retrain trigger',
  );
}

const entry = process.argv[1] ?? '';
if (entry.endsWith('batch/main.js') || entry.endsWith('batch/main.ts')) await main();
