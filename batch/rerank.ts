/**
 * Reranker training and offline evaluation on the time split of the ETL.
 *
 * With enough labelled feeds in the served log (`logged-feeds.ts`, at least `minLoggedFeeds`),
 * steps 1-4 are the server's own logged rows instead: each feed's candidates and features as
 * served, labelled with the user's events up to their next feed; the newest quarter of those
 * feeds is held out (a time split). Steps 5 and 6 are the same either way.
 *
 * Steps without them (a new stack, or logging off):
 *   1. Queries. Cut-off queries: users with validation interactions and a train history, at
 *      most `maxUsers`, state at the cut-off, labels their validation interactions. History
 *      queries: up to `maxUsers` users with more than `historyLabels` + 1 train events, state
 *      before their last `historyLabels` (5) train events, labels those events. Without them a
 *      short validation window leaves a handful of queries (39 on MovieLens 100K's last 10%);
 *      with them every user with history teaches the ranker what comes next. Their candidates
 *      have no batch source (the batch lists were built from the events they hold out), and the
 *      neighbours and popularity they see include those events. A quarter of the users (a hash
 *      of the userId) is held out: their queries of both kinds are only evaluated.
 *   2. Each query's state, computed by the stream's own feature script: the events before the
 *      query are applied through `SessionFeatureStore` to scratch keys (TTL, their own change
 *      channel) and read back with `parseFeatures`, so training sees exactly what serving reads.
 *   3. Candidates, the same mix the server will build: the batch candidates (`batch`),
 *      co-visitation neighbours of the user's last items (`covis`), items trending in the last
 *      day before the cut-off (`trending`) and overall popularity (`popularity`); deduplicated.
 *   4. Features through the shared module (`serving/rank-features.ts`); labels = the best grade
 *      of the user's validation interactions with the item (`relevance`).
 *   5. Pick the heuristic blend's weights on the training queries (`blend-weights.ts`; published
 *      with the batch version, so serving blends with them). Train LightGBM LambdaRank (Python,
 *      exported to ONNX), load it in onnxruntime-node, and evaluate on the held-out queries:
 *      popularity, co-visitation (the candidates by their summed neighbour score), the blend
 *      with the picked weights, and the reranked hybrid. The gate (`batch/run.ts`) promotes a
 *      model only above the blend and co-visitation.
 *   6. The current champion (when given) reranks the same held-out queries, so the promotion gate
 *      compares two scores of one data set; a champion that cannot be loaded with today's
 *      features has no score (and loses to any candidate above the minimum).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { RedisClient } from '../store/redis.js';
import type { Config, Logger } from '../core/index.js';
import { EVENT_TYPES } from '../schemas/index.js';
import {
  readFeatures,
  SessionFeatureStore,
  type SessionFeatures,
} from '../store/session-features.js';
import { blendScores, type BlendWeights } from '../serving/blend.js';
import { tuneBlend, type BlendTuning } from './blend-weights.js';
import { FEATURE_COUNT, FEATURE_NAMES } from '../serving/rank-features.js';
import { loadRanker } from '../serving/ranker.js';
import type { CandidateResult } from './candidates.js';
import type { EtlResult } from './etl.js';
import { evaluate, ndcgByUser, pairedAdvantage, writeReport, type Metrics } from './evaluate.js';

export type Advantage = ReturnType<typeof pairedAdvantage>;
import { trainReranker, type TrainResult } from './train.js';
import { loadTrainingInputs, type TrainingInputs } from './rerank-inputs.js';
import { candidatesOf, featuresOf, queriesOf, type Query } from './rerank-queries.js';
import { relevance, writeTrainingData, type TrainingGroup } from './training-data.js';
import { readLoggedFeeds } from './logged-feeds.js';

export interface RerankOptions {
  /** Users trained and evaluated on, both halves together. @default 6000 */
  maxUsers?: number;
  /** Recent items whose neighbours are real-time candidates. @default `RECSYS_FEED_SEED_ITEMS` */
  recentItems?: number;
  /** Popular and trending items added to every user's candidates. @default 50 */
  popularK?: number;
  /** Train events a history query holds out as its labels (0: no history queries). @default 5 */
  historyLabels?: number;
  /** Where training data, the model and the report go. @default `<batch dir>/rerank` */
  outDir?: string;
  /** LightGBM parameters merged over train.py's defaults. */
  params?: Record<string, unknown>;
  /** The champion to re-score on the same held-out users (step 6). */
  champion?: { version: string; onnxPath: string } | null;
  /**
   * Labelled logged feeds (`logged-feeds.ts`) needed to train on the served log instead of
   * rebuilt queries. @default 500
   */
  minLoggedFeeds?: number;
  /** Abandons the run: the Python training is killed. */
  signal?: AbortSignal;
}

export interface RerankResult {
  train: TrainResult;
  /** Metrics of each method on the evaluation users. */
  metrics: Record<'popularity' | 'covisitation' | 'blend' | 'hybrid', Metrics>;
  /** The hybrid against each heuristic on the same held-out queries (`pairedAdvantage`). */
  advantage: Record<'blend' | 'covisitation', Advantage>;
  report: { json: string; markdown: string };
  users: { train: number; eval: number };
  /** Training queries by kind (`logged`: feeds of the served log). */
  queries: { cutoff: number; history: number; logged: number };
  /** The blend's weights picked on the training queries, which the held-out blend used. */
  blend: BlendTuning;
  /**
   * The champion's hybrid metrics on the same held-out users, and its per-query advantage over
   * the blend; null when it cannot be loaded.
   */
  champion: { version: string; metrics: Metrics | null; overBlend: Advantage | null } | null;
  durationMs: number;
}

/**
 * Whether a user's queries are held out for evaluation (a quarter of the users), by FNV-1a of
 * the userId: a stable split that does not depend on row order.
 */
function heldOut(userId: string): boolean {
  let h = 0x811c9dc5;
  for (let i = 0; i < userId.length; i++) h = Math.imul(h ^ userId.charCodeAt(i), 0x01000193);
  return (h >>> 0) % 4 === 0;
}

export async function trainAndEvaluate(
  config: Readonly<Config>,
  log: Logger,
  redis: RedisClient,
  etl: Pick<EtlResult, 'paths' | 'cutoffTs'>,
  cands: Pick<CandidateResult, 'paths'>,
  options: RerankOptions = {},
): Promise<RerankResult> {
  const t0 = performance.now();
  const recentK = options.recentItems ?? config.serving.seedItems;
  const outDir = options.outDir ?? join(config.batch.dir, 'rerank');
  await mkdir(outDir, { recursive: true });
  const cutoff = etl.cutoffTs;
  const historyLabels = options.historyLabels ?? 5;
  const inputs = await loadTrainingInputs(etl, cands, {
    maxUsers: options.maxUsers ?? 6000,
    recentK,
    profileK: config.features.recentItems,
    popularK: options.popularK ?? 50,
    historyLabels: Math.max(1, historyLabels),
  });
  const { items } = inputs;
  const trainGroups: TrainingGroup[] = [];
  const evalUsers: EvalUser[] = [];
  const kinds = { cutoff: 0, history: 0, logged: 0 };
  const logged = await readLoggedFeeds(config, log, etl.paths.events, {
    windowMs: config.consumer.attributionWindowMs,
  }).catch((err: Error) => {
    log.warn({ err: err.message }, 'served log not read: training on rebuilt queries');
    return null;
  });
  const minLogged = options.minLoggedFeeds ?? 500;
  if (logged && logged.train.length + logged.eval.length >= minLogged) {
    // 1-4 from the served log: the server's own rows, labelled with what came next.
    for (const g of logged.train) {
      trainGroups.push({ qid: trainGroups.length, features: g.features, labels: g.labels });
    }
    for (const g of logged.eval) {
      const truth = new Map<string, number>();
      g.labels.forEach((l, r) => l > 0 && truth.set(g.ids[r] as string, l));
      evalUsers.push({ key: g.key, truth, ids: g.ids, features: g.features });
    }
    kinds.logged = trainGroups.length;
  } else {
    if (logged) {
      log.info(
        { labelled: logged.counts.labelled, minLogged },
        'too few logged feeds: rebuilt queries',
      );
    }
    const queries = queriesOf(inputs, cutoff, historyLabels);
    const sessions = await sessionsAt(config, redis, queries);
    // 3 + 4. Candidates and features per query; the queries of held-out users are evaluated.
    for (const query of queries) {
      const session = sessions.get(query.key) ?? null;
      const candidates = candidatesOf(inputs, query, recentK, session);
      if (candidates.length === 0) continue;
      const features = featuresOf(inputs, session, candidates, query.at);
      const ids = candidates.map((c) => c.itemId);
      if (heldOut(query.user.id)) {
        const truth = new Map([...query.labels].map(([item, types]) => [item, relevance(types)]));
        evalUsers.push({ key: query.key, truth, ids, features });
        continue;
      }
      const labels = candidates.map((c) => relevance(query.labels.get(c.itemId) ?? []));
      trainGroups.push({ qid: trainGroups.length, features, labels });
      kinds[query.kind] += 1;
    }
  }
  const trainParquet = join(outDir, 'train.parquet');
  await writeTrainingData(trainParquet, trainGroups);
  log.info(
    { groups: trainGroups.length, ...kinds, evalUsers: evalUsers.length },
    'training data written',
  );

  const blend = tuneBlend(trainGroups);
  log.info(blend, 'blend weights picked on the training queries');

  // 5. Train, then evaluate on the held-out queries.
  const train = await trainReranker(config, log, {
    trainParquet,
    outDir: join(outDir, 'model'),
    params: options.params,
    signal: options.signal,
  });
  const { recs, truth } = await rankHeldOut(train.onnxPath, inputs, evalUsers, blend.weights);
  const metrics = {
    popularity: evaluate(recs.popularity, truth, items.size),
    covisitation: evaluate(recs.covisitation, truth, items.size),
    blend: evaluate(recs.blend, truth, items.size),
    hybrid: evaluate(recs.hybrid, truth, items.size),
  };
  const hybridByUser = ndcgByUser(recs.hybrid, truth);
  const blendByUser = ndcgByUser(recs.blend, truth);
  const advantage = {
    blend: pairedAdvantage(hybridByUser, blendByUser),
    covisitation: pairedAdvantage(hybridByUser, ndcgByUser(recs.covisitation, truth)),
  };
  const rescored = options.champion
    ? await rankHeldOut(options.champion.onnxPath, inputs, evalUsers, blend.weights).catch(
        (err: Error) => {
          log.warn(
            { err: err.message, version: options.champion?.version },
            'champion not re-scored',
          );
          return null;
        },
      )
    : null;
  const champion = options.champion
    ? {
        version: options.champion.version,
        metrics: rescored && evaluate(rescored.recs.hybrid, rescored.truth, items.size),
        overBlend:
          rescored && pairedAdvantage(ndcgByUser(rescored.recs.hybrid, truth), blendByUser),
      }
    : null;
  const report = await writeReport(outDir, metrics, {
    cutoffTs: cutoff,
    trainUsers: trainGroups.length,
    evalUsers: evalUsers.length,
    model: train.summary,
    eventTypes: EVENT_TYPES,
  });
  return {
    train,
    metrics,
    advantage,
    report,
    users: { train: trainGroups.length, eval: evalUsers.length },
    queries: kinds,
    blend,
    champion,
    durationMs: Math.round(performance.now() - t0),
  };
}

interface EvalUser {
  /** The query's key (a user can have a cut-off and a history query; a logged feed's id). */
  key: string;
  /** Graded relevance of the items the user interacted with after the query. */
  truth: Map<string, number>;
  /** The candidates, in the order of the feature rows. */
  ids: string[];
  features: Float32Array;
}

/**
 * Step 2: each query's state, through the stream's own feature script on scratch users (their
 * own change channel, a TTL, removed after), read at the query's time.
 */
async function sessionsAt(
  config: Readonly<Config>,
  redis: RedisClient,
  list: readonly Query[],
): Promise<Map<string, SessionFeatures | null>> {
  const runId = `batch-scratch-${Date.now().toString(36)}`;
  const store = new SessionFeatureStore(redis, {
    ...config.features,
    ttlSec: 3600,
    channel: `recsys:batch:scratch`,
  });
  const sessions = new Map<string, SessionFeatures | null>();
  for (let i = 0; i < list.length; i += 200) {
    const slice = list.slice(i, i + 200);
    await store.apply(
      slice.flatMap((query) =>
        query.events.map((e, k) => ({
          userId: `${runId}:${query.key}`,
          eventId: e.eventId,
          itemId: e.itemId,
          type: e.type,
          ts: e.ts,
          sessionId: null,
          category: e.category,
          partition: 0,
          offset: String(k),
        })),
      ),
    );
    const read = await Promise.all(
      slice.map((query) =>
        readFeatures(redis, `${runId}:${query.key}`, query.at, config.features.halfLifeMs),
      ),
    );
    slice.forEach((query, k) => sessions.set(query.key, read[k] ?? null));
    await store.remove(slice.map((query) => `${runId}:${query.key}`));
  }
  return sessions;
}

/**
 * Step 5: the top 20 of each method for the held-out queries, and their graded truth. Every
 * method but popularity orders the same candidates: co-visitation by its summed score (the
 * neighbours of the user's recent items), the blend as serving does without a model
 * (`serving/blend.ts`), the hybrid by the model.
 */
async function rankHeldOut(
  onnxPath: string,
  inputs: TrainingInputs,
  evalUsers: EvalUser[],
  blend: BlendWeights,
) {
  const ranker = await loadRanker(onnxPath);
  const truth = new Map<string, Map<string, number>>();
  const recs = {
    popularity: new Map<string, string[]>(),
    covisitation: new Map<string, string[]>(),
    blend: new Map<string, string[]>(),
    hybrid: new Map<string, string[]>(),
  };
  const popularList = inputs.popular.map(([i]) => i);
  const top = (ids: string[], scores: ArrayLike<number>): string[] =>
    ids
      .map((_, i) => i)
      .sort((a, b) => (scores[b] as number) - (scores[a] as number))
      .slice(0, 20)
      .map((i) => ids[i] as string);
  try {
    for (const { key, truth: graded, ids: candidates, features } of evalUsers) {
      const n = candidates.length;
      truth.set(key, graded);
      recs.popularity.set(key, popularList.slice(0, 20));
      const covis = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const o = i * FEATURE_COUNT;
        covis[i] = (features[o + COVIS_COL] as number) + 1e-3 * (features[o + POP_COL] as number);
      }
      recs.covisitation.set(key, top(candidates, covis));
      recs.blend.set(key, top(candidates, blendScores(features, n, new Float32Array(n), blend)));
      recs.hybrid.set(key, top(candidates, await ranker.score(features, n)));
    }
  } finally {
    await ranker.release();
  }
  return { recs, truth };
}

const COVIS_COL = FEATURE_NAMES.indexOf('score_covis_sum');
const POP_COL = FEATURE_NAMES.indexOf('item_popularity_log');
