/**
 * The batch run as a library: every step once, in order, each printing what it did and how
 * long it took (see `main.ts` for the steps and the CLI). Tests and the benches call
 * {@link runBatch} directly.
 *
 * @example
 *   const result = await runBatch(config, log, redis, { generateEvents: 200_000 });
 */
import { join } from 'node:path';
import type { RedisClient } from '../store/redis.js';
import type { Config, Logger } from '../core/index.js';
import { openRegistry, type ModelRegistry } from '../store/registry/index.js';
import { buildCandidates } from './candidates.js';
import { buildEase } from './ease.js';
import { runEtl } from './etl.js';
import { generate } from './generate.js';
import { publishCandidates } from './publish.js';
import { blendMeta } from '../serving/blend.js';
import { trainAndEvaluate, type Advantage } from './rerank.js';
import { openSqlEngine } from './open-engine.js';

export interface BatchRunOptions {
  /** Generate this many synthetic events into the lake first. */
  generateEvents?: number;
  /** Seed of the generator. @default 1 */
  seed?: number;
  /** Users in reranker training and evaluation. */
  maxUsers?: number;
  /** LightGBM parameters over train.py's defaults. */
  params?: Record<string, unknown>;
  /**
   * Abandons the run (a shutdown at its deadline): no further step starts and the Python
   * training is killed; the run rejects with the signal's reason. Every step is idempotent, so
   * the next run redoes it; a publish under way is left to finish (its version goes live in one
   * pointer update, or not at all).
   */
  signal?: AbortSignal;
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
  redis: RedisClient,
  options: BatchRunOptions = {},
  progress: (line: string) => void = (line) => process.stdout.write(line + '\n'),
): Promise<BatchRunResult> {
  const stepsMs: Record<string, number> = {};
  const step = async <T>(name: string, fn: () => Promise<T>, say: (r: T) => string): Promise<T> => {
    options.signal?.throwIfAborted();
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
  // One engine (one Spark session on the spark engine) for the ETL and the candidates.
  const session = await openSqlEngine(config, log);
  let etl: Awaited<ReturnType<typeof runEtl>>;
  let cands: Awaited<ReturnType<typeof buildCandidates>>;
  try {
    etl = await step(
      'etl',
      () => runEtl(config, log, { catalogPath, session }),
      (r) =>
        `${r.counts.events} events (${r.counts.duplicates} duplicates dropped), ${r.counts.users} users, ${r.counts.sessions} sessions, cut-off ${new Date(r.cutoffTs).toISOString()} (${session.name})`,
    );
    const done = etl;
    cands = await step(
      'candidates',
      () => buildCandidates(config, log, done, { session }),
      (r) =>
        `${r.counts.neighbours} neighbour pairs over ${r.counts.itemsWithNeighbours} items, ${r.counts.userCandidates} user candidates for ${r.counts.users} users`,
    );
  } finally {
    await session.close();
  }
  const ease = await step(
    'ease',
    () => buildEase(config, log, etl, join(cands.dir, 'ease.parquet'), options.signal),
    (r) => `EASE weights over ${r.items} items, ${r.pairs} kept`,
  );
  cands = { ...cands, paths: { ...cands.paths, ease: ease.path } };
  const champion = await currentChampion(config, log);
  const ranked = await step(
    'train+evaluate',
    () =>
      trainAndEvaluate(config, log, redis, etl, cands, {
        maxUsers: options.maxUsers,
        params: options.params,
        champion,
        signal: options.signal,
      }),
    (r) =>
      `${r.users.train} training queries (${r.queries.logged} logged feeds, ${r.queries.cutoff} at the cut-off, ${r.queries.history} from history), ${r.users.eval} held-out queries; NDCG@10 popularity ${r.metrics.popularity.ndcg_at_10.toFixed(4)}, co-visitation ${r.metrics.covisitation.ndcg_at_10.toFixed(4)}, blend ${r.metrics.blend.ndcg_at_10.toFixed(4)}, hybrid ${r.metrics.hybrid.ndcg_at_10.toFixed(4)} (z over the blend ${r.advantage.blend.z.toFixed(2)}); blend weights EASE ${r.blend.weights.ease}, co-visitation damping ${r.blend.weights.covisDamping} (training NDCG@10 ${r.blend.ndcg.toFixed(4)} against ${r.blend.plainNdcg.toFixed(4)} unweighted)`,
  );
  const model = await step(
    'register',
    () => registerModel(config, log, ranked),
    (r) =>
      `version ${r.version} ${r.promoted ? 'promoted to champion' : 'registered, not promoted'}: ${r.reason}`,
  );
  const published = await step(
    'publish',
    () => publishCandidates(config, redis, log, cands, { meta: blendMeta(ranked.blend.weights) }),
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

/** The champion to re-score on this run's held-out data (its ONNX file local), or null. */
async function currentChampion(
  config: Readonly<Config>,
  log: Logger,
): Promise<{ version: string; onnxPath: string } | null> {
  const registry = openRegistry(config.batch, log);
  try {
    const champion = await registry.champion();
    return champion && { version: champion.version, onnxPath: champion.onnxPath };
  } finally {
    await registry.close();
  }
}

/**
 * Registers the trained model with its offline metrics and the champion's on the same held-out
 * data (`champion_*`, tag `champion_version`: both scores the gate compared, in the registry);
 * promoted only if it beats the heuristic blend serving uses without a model and co-visitation
 * on those queries (else serving keeps what it has: the blend, or a champion that won before,
 * unless the blend surely beats that champion there: it is retired), and the champion's
 * re-score.
 */
async function registerModel(
  config: Readonly<Config>,
  log: Logger,
  ranked: Awaited<ReturnType<typeof trainAndEvaluate>>,
): Promise<{ version: string; promoted: boolean; reason: string }> {
  const registry = openRegistry(config.batch, log);
  try {
    const metrics = { ...ranked.metrics.hybrid };
    const rescored = ranked.champion;
    const championMetrics: Record<string, number> = {};
    for (const key of ['ndcg_at_10', 'recall_at_20', 'mrr_at_20', 'hit_rate_at_10'] as const) {
      const v = rescored?.metrics?.[key];
      if (v !== undefined && Number.isFinite(v)) championMetrics[`champion_${key}`] = v;
    }
    const { version } = await registry.register({
      onnxPath: ranked.train.onnxPath,
      metrics: {
        ndcg_at_10: metrics.ndcg_at_10,
        recall_at_20: metrics.recall_at_20,
        mrr_at_20: metrics.mrr_at_20,
        hit_rate_at_10: metrics.hit_rate_at_10,
        coverage_at_10: metrics.coverage_at_10,
        covisitation_ndcg_at_10: ranked.metrics.covisitation.ndcg_at_10,
        blend_ndcg_at_10: ranked.metrics.blend.ndcg_at_10,
        popularity_ndcg_at_10: ranked.metrics.popularity.ndcg_at_10,
        ...championMetrics,
      },
      ...(rescored ? { tags: { champion_version: rescored.version } } : {}),
      params: {
        objective: 'lambdarank',
        evalUsers: ranked.users.eval,
        trainQueries: ranked.users.train,
      },
    });
    const floor = belowHeuristics(ranked.advantage);
    if (floor) {
      const retired = await retireIfBelowBlend(registry, ranked.champion);
      return { version, promoted: false, reason: retired ? `${floor}; ${retired}` : floor };
    }
    const decision = await registry.promoteIfBetter(
      version,
      metrics as unknown as Record<string, number>,
      {
        minNdcg: config.batch.minNdcg,
        ...(rescored
          ? {
              rescored: {
                version: rescored.version,
                metrics: (rescored.metrics ?? {}) as unknown as Record<string, number>,
              },
            }
          : {}),
      },
    );
    return { version, promoted: decision.promoted, reason: decision.reason };
  } finally {
    await registry.close();
  }
}

/**
 * Retires the champion when the heuristic blend surely beats it on this run's held-out queries
 * (its advantage's z at most -{@link PROMOTION_Z}): a model promoted on little data must not keep
 * serving once fresh data shows it hurts. Returns what was done, or null.
 */
export async function retireIfBelowBlend(
  registry: Pick<ModelRegistry, 'retireChampion'>,
  champion: Awaited<ReturnType<typeof trainAndEvaluate>>['champion'],
): Promise<string | null> {
  const over = champion?.overBlend;
  if (!champion || !over || !(over.diff < 0 && over.z <= -PROMOTION_Z)) return null;
  if (!(await registry.retireChampion(champion.version))) return null;
  return `champion ${champion.version} retired: the heuristic blend beats it on ${over.users} held-out queries (mean difference ${(-over.diff).toFixed(4)}, z ${(-over.z).toFixed(2)})`;
}

/** z score of the per-query NDCG@10 advantage the model needs (one-sided 5%). */
export const PROMOTION_Z = 1.64;

/**
 * Why the model must not serve when it does not beat both the heuristic blend and co-visitation
 * on the held-out queries (NDCG@10) surely: by a positive mean per-query difference with a z
 * score of at least {@link PROMOTION_Z} (a small held-out set or a tie keeps the blend); null
 * when it does.
 */
export function belowHeuristics(
  advantage: Readonly<Record<'blend' | 'covisitation', Advantage>>,
): string | null {
  for (const name of ['blend', 'covisitation'] as const) {
    const { diff, z, users } = advantage[name];
    if (!(diff > 0 && z >= PROMOTION_Z)) {
      const what = name === 'blend' ? 'heuristic blend' : 'co-visitation';
      return `NDCG@10 does not surely beat the ${what} on ${users} held-out queries (mean difference ${diff.toFixed(4)}, z ${z.toFixed(2)} < ${PROMOTION_Z})`;
    }
  }
  return null;
}
