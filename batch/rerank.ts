/**
 * Reranker training and offline evaluation on the time split of the ETL.
 *
 * Steps:
 *   1. Users: those with validation interactions and a train history, at most `maxUsers`,
 *      split in two halves by a hash of the userId: one half trains the reranker, the other is
 *      only evaluated (so the model never saw the users it is scored on).
 *   2. Each user's state at the cut-off, computed by the stream's own feature script: the user's
 *      train events are applied through `SessionFeatureStore` to scratch keys (TTL, their own change
 *      channel) and read back with `parseFeatures`, so training sees exactly what serving reads.
 *   3. Candidates, the same mix the server will build: the batch candidates (`batch`),
 *      co-visitation neighbours of the user's last items (`covis`), items trending in the last
 *      day before the cut-off (`trending`) and overall popularity (`popularity`); deduplicated.
 *   4. Features through the shared module (`serving/rank-features.ts`); labels = the best grade
 *      of the user's validation interactions with the item (`relevance`).
 *   5. Train LightGBM LambdaRank (Python, exported to ONNX), load it in onnxruntime-node, and
 *      evaluate on the other half: popularity, co-visitation only, and the reranked hybrid.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import type { Config, Logger } from '../core/index.js';
import { EVENT_TYPES } from '../schemas/index.js';
import {
  readFeatures,
  SessionFeatureStore,
  type SessionFeatures,
} from '../store/session-features.js';
import {
  FEATURE_COUNT,
  fillFeatures,
  userPriceLevel,
  type CandidateSource,
  type RankCandidate,
} from '../serving/rank-features.js';
import { loadRanker } from '../serving/ranker.js';
import type { CandidateResult } from './candidates.js';
import type { EtlResult } from './etl.js';
import { evaluate, writeReport, type Metrics } from './evaluate.js';
import { trainReranker, type TrainResult } from './train.js';
import { loadTrainingInputs, type TrainingInputs, type UserData } from './rerank-inputs.js';
import { relevance, writeTrainingData, type TrainingGroup } from './training-data.js';

export interface RerankOptions {
  /** Users trained and evaluated on, both halves together. @default 6000 */
  maxUsers?: number;
  /** Recent items whose neighbours are real-time candidates. @default 5 */
  recentItems?: number;
  /** Popular and trending items added to every user's candidates. @default 50 */
  popularK?: number;
  /** Where training data, the model and the report go. @default `<batch dir>/rerank` */
  outDir?: string;
  /** LightGBM parameters merged over train.py's defaults. */
  params?: Record<string, unknown>;
}

export interface RerankResult {
  train: TrainResult;
  /** Metrics of each method on the evaluation users. */
  metrics: Record<'popularity' | 'covisitation' | 'hybrid', Metrics>;
  report: { json: string; markdown: string };
  users: { train: number; eval: number };
  durationMs: number;
}

/** FNV-1a of the userId: a stable split that does not depend on row order. */
function half(userId: string): 0 | 1 {
  let h = 0x811c9dc5;
  for (let i = 0; i < userId.length; i++) h = Math.imul(h ^ userId.charCodeAt(i), 0x01000193);
  return (h >>> 0) % 2 === 0 ? 0 : 1;
}

export async function trainAndEvaluate(
  config: Readonly<Config>,
  log: Logger,
  redis: Redis,
  etl: Pick<EtlResult, 'paths' | 'cutoffTs'>,
  cands: Pick<CandidateResult, 'paths'>,
  options: RerankOptions = {},
): Promise<RerankResult> {
  const t0 = performance.now();
  const recentK = options.recentItems ?? 5;
  const outDir = options.outDir ?? join(config.batch.dir, 'rerank');
  await mkdir(outDir, { recursive: true });
  const cutoff = etl.cutoffTs;
  const inputs = await loadTrainingInputs(etl, cands, {
    maxUsers: options.maxUsers ?? 6000,
    recentK,
    popularK: options.popularK ?? 50,
  });
  const { users, items } = inputs;
  const sessions = await sessionsAtCutoff(config, redis, [...users.values()], cutoff);

  // 3 + 4. Candidates and features per user; the hash halves train and evaluate.
  const trainGroups: TrainingGroup[] = [];
  const evalUsers: EvalUser[] = [];
  let qid = 0;
  for (const user of users.values()) {
    const candidates = candidatesOf(inputs, user, recentK);
    if (candidates.length === 0) continue;
    const features = featuresOf(inputs, sessions.get(user.id) ?? null, candidates, cutoff);
    if (half(user.id) === 0) {
      const labels = candidates.map((c) => relevance(user.relevant.get(c.itemId) ?? []));
      trainGroups.push({ qid: qid++, features, labels });
    } else {
      evalUsers.push({ user, candidates, features });
    }
  }
  const trainParquet = join(outDir, 'train.parquet');
  await writeTrainingData(trainParquet, trainGroups);
  log.info({ groups: trainGroups.length, evalUsers: evalUsers.length }, 'training data written');

  // 5. Train, then evaluate on the held-out half.
  const train = await trainReranker(config, log, {
    trainParquet,
    outDir: join(outDir, 'model'),
    params: options.params,
  });
  const { recs, truth } = await rankHeldOut(train.onnxPath, inputs, evalUsers);
  const metrics = {
    popularity: evaluate(recs.popularity, truth, items.size),
    covisitation: evaluate(recs.covisitation, truth, items.size),
    hybrid: evaluate(recs.hybrid, truth, items.size),
  };
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
    report,
    users: { train: trainGroups.length, eval: evalUsers.length },
    durationMs: Math.round(performance.now() - t0),
  };
}

interface EvalUser {
  user: UserData;
  candidates: RankCandidate[];
  features: Float32Array;
}

/**
 * Step 2: each user's state at the cut-off, through the stream's own feature script on scratch
 * users (their own change channel, a TTL, removed after).
 */
async function sessionsAtCutoff(
  config: Readonly<Config>,
  redis: Redis,
  list: readonly UserData[],
  cutoff: number,
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
      slice.flatMap((user) =>
        user.events.map((e, k) => ({
          userId: `${runId}:${user.id}`,
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
      slice.map((user) =>
        readFeatures(redis, `${runId}:${user.id}`, cutoff, config.features.halfLifeMs),
      ),
    );
    slice.forEach((user, k) => sessions.set(user.id, read[k] ?? null));
    await store.remove(slice.map((user) => `${runId}:${user.id}`));
  }
  return sessions;
}

/** Step 3: the same candidate mix the server builds, deduplicated, best score per source. */
function candidatesOf(inputs: TrainingInputs, user: UserData, recentK: number): RankCandidate[] {
  const byItem = new Map<string, Partial<Record<CandidateSource, number>>>();
  const add = (itemId: string, source: CandidateSource, score: number): void => {
    const s = byItem.get(itemId) ?? {};
    s[source] = Math.max(s[source] ?? 0, score);
    byItem.set(itemId, s);
  };
  for (const [itemId, score] of inputs.batchCands.get(user.id) ?? []) add(itemId, 'batch', score);
  const recent = [...new Set(user.events.map((e) => e.itemId).reverse())].slice(0, recentK);
  recent.forEach((itemId, pos) => {
    for (const [nb, score] of inputs.neighbours.get(itemId) ?? []) {
      add(nb, 'covis', score / (1 + pos));
    }
  });
  for (const [itemId, score] of inputs.trending) add(itemId, 'trending', score);
  for (const [itemId, score] of inputs.popular) add(itemId, 'popularity', score);
  return [...byItem].map(([itemId, scores]) => ({
    itemId,
    scores,
    item: inputs.items.get(itemId) ?? null,
  }));
}

/** Step 4: the features through the shared module, as serving computes them. */
function featuresOf(
  inputs: TrainingInputs,
  session: SessionFeatures | null,
  candidates: RankCandidate[],
  cutoff: number,
): Float32Array {
  const out = new Float32Array(candidates.length * FEATURE_COUNT);
  fillFeatures(
    out,
    {
      now: cutoff,
      session,
      userPriceLevel: userPriceLevel((session?.recent ?? []).map((i) => inputs.items.get(i))),
    },
    candidates,
  );
  return out;
}

/** Step 5: the top 20 of each method for the held-out users, and their graded truth. */
async function rankHeldOut(onnxPath: string, inputs: TrainingInputs, evalUsers: EvalUser[]) {
  const { popular, batchCands } = inputs;
  const ranker = await loadRanker(onnxPath);
  const truth = new Map<string, Map<string, number>>();
  const recs = {
    popularity: new Map<string, string[]>(),
    covisitation: new Map<string, string[]>(),
    hybrid: new Map<string, string[]>(),
  };
  const popularList = popular.map(([i]) => i);
  try {
    for (const { user, candidates, features } of evalUsers) {
      truth.set(
        user.id,
        new Map([...user.relevant].map(([item, types]) => [item, relevance(types)])),
      );
      recs.popularity.set(user.id, popularList.slice(0, 20));
      recs.covisitation.set(
        user.id,
        (batchCands.get(user.id) ?? [])
          .filter(([, , source]) => source === 'covisit')
          .sort((a, b) => b[1] - a[1])
          .slice(0, 20)
          .map(([i]) => i),
      );
      const scores = await ranker.score(features, candidates.length);
      const order = candidates
        .map((_, i) => i)
        .sort((a, b) => (scores[b] as number) - (scores[a] as number));
      recs.hybrid.set(
        user.id,
        order.slice(0, 20).map((i) => (candidates[i] as RankCandidate).itemId),
      );
    }
  } finally {
    await ranker.release();
  }
  return { recs, truth };
}
