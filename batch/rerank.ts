/**
 * Reranker training and offline evaluation on the time split of the ETL.
 *
 * Steps:
 *   1. Users: those with validation interactions and a train history, at most `maxUsers`,
 *      split in two halves by a hash of the userId: one half trains the reranker, the other is
 *      only evaluated (so the model never saw the users it is scored on).
 *   2. Each user's state at the cut-off, computed by the stream's own feature script: the user's
 *      train events are applied through `FeatureStore` to scratch keys (TTL, their own change
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
import { EVENT_TYPES, type EventType } from '../schemas/index.js';
import { FeatureStore, parseFeatures, type SessionFeatures } from '../store/session-features.js';
import { userFeaturesKey } from '../store/keys.js';
import {
  FEATURE_COUNT,
  fillFeatures,
  userPriceLevel,
  type CandidateSource,
  type RankCandidate,
  type RankItem,
} from '../serving/rank-features.js';
import { loadRanker } from '../serving/ranker.js';
import type { CandidateResult } from './candidates.js';
import { openBatchDb, sqlString } from './duck.js';
import type { EtlResult } from './etl.js';
import { evaluate, writeReport, type Metrics } from './evaluate.js';
import { trainReranker, type TrainResult } from './train.js';
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

interface UserData {
  id: string;
  events: {
    eventId: string;
    itemId: string;
    type: EventType;
    ts: number;
    category: string | null;
  }[];
  relevant: Map<string, EventType[]>;
}

const num = (v: unknown): number => (typeof v === 'bigint' ? Number(v) : Number(v ?? 0));

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
  const maxUsers = options.maxUsers ?? 6000;
  const recentK = options.recentItems ?? 5;
  const popularK = options.popularK ?? 50;
  const outDir = options.outDir ?? join(config.batch.dir, 'rerank');
  await mkdir(outDir, { recursive: true });
  const cutoff = etl.cutoffTs;
  const db = await openBatchDb();
  const q = async (sql: string): Promise<unknown[][]> =>
    (await db.conn.runAndReadAll(sql)).getRowsJS() as unknown[][];
  const p = etl.paths;

  // 1. Users with something to predict and something to start from.
  const userRows = await q(`
    WITH v AS (SELECT DISTINCT userId FROM read_parquet(${sqlString(p.validInteractions)})),
         t AS (SELECT DISTINCT userId FROM read_parquet(${sqlString(p.trainInteractions)}))
    SELECT v.userId FROM v JOIN t USING (userId) ORDER BY hash(v.userId) LIMIT ${maxUsers}`);
  const users = new Map<string, UserData>();
  for (const [u] of userRows)
    users.set(String(u), { id: String(u), events: [], relevant: new Map() });
  await db.conn.run(
    `CREATE TEMP TABLE sel AS SELECT unnest(${sqlString(JSON.stringify([...users.keys()]))}::JSON::VARCHAR[]) AS userId`,
  );

  // Train events (the state at the cut-off) and validation interactions (the labels).
  for (const [u, eventId, itemId, type, ts, cat, split] of await q(`
      SELECT e.userId, e.eventId, e.itemId, e.type, e.ts_ms, e.categoryL1, e.split
      FROM read_parquet(${sqlString(p.events)}) e JOIN sel USING (userId)
      ORDER BY e.userId, e.ts_ms, e.eventId`)) {
    const user = users.get(String(u)) as UserData;
    if (split === 'train') {
      user.events.push({
        eventId: String(eventId),
        itemId: String(itemId),
        type: type as EventType,
        ts: num(ts),
        category: cat === 'unknown' || cat === null ? null : String(cat),
      });
    } else {
      const list = user.relevant.get(String(itemId)) ?? [];
      list.push(type as EventType);
      user.relevant.set(String(itemId), list);
    }
  }

  // Items: catalog facts and train popularity.
  const items = new Map<string, RankItem>();
  for (const [itemId, c1, price, createdAt, pop] of await q(`
      SELECT i.itemId, i.categoryL1, i.price, i.createdAt, coalesce(s.popularity, 0)
      FROM read_parquet(${sqlString(p.items)}) i
      LEFT JOIN read_parquet(${sqlString(p.itemStats)}) s USING (itemId)`)) {
    items.set(String(itemId), {
      categoryL1: String(c1),
      price: price === null ? null : num(price),
      createdAt: num(createdAt),
      popularity: num(pop),
    });
  }
  const popular = (
    await q(`
      SELECT itemId, popularity FROM read_parquet(${sqlString(p.itemStats)})
      ORDER BY popularity DESC, itemId LIMIT ${popularK}`)
  ).map(([i, s]) => [String(i), num(s)] as const);
  const trending = (
    await q(`
      SELECT itemId, count(*) AS n FROM read_parquet(${sqlString(p.events)})
      WHERE split = 'train' AND ts_ms >= ${cutoff - 86_400_000}
      GROUP BY itemId ORDER BY n DESC, itemId LIMIT ${popularK}`)
  ).map(([i, s]) => [String(i), num(s)] as const);

  // Batch candidates and item neighbours of the selected users.
  const batchCands = new Map<string, [string, number, string][]>();
  for (const [u, itemId, score, source] of await q(`
      SELECT c.userId, c.itemId, c.score, c.source FROM read_parquet(${sqlString(cands.paths.users)}) c
      JOIN sel USING (userId) ORDER BY c.userId, c.rank`)) {
    const list = batchCands.get(String(u)) ?? [];
    list.push([String(itemId), num(score), String(source)]);
    batchCands.set(String(u), list);
  }
  const recentItems = new Set<string>();
  for (const user of users.values()) {
    for (const e of user.events.slice(-recentK)) recentItems.add(e.itemId);
  }
  await db.conn.run(
    `CREATE TEMP TABLE recent AS SELECT unnest(${sqlString(JSON.stringify([...recentItems]))}::JSON::VARCHAR[]) AS itemId`,
  );
  const neighbours = new Map<string, [string, number][]>();
  for (const [itemId, nb, score] of await q(`
      SELECT n.itemId, n.neighbourId, n.score FROM read_parquet(${sqlString(cands.paths.neighbours)}) n
      JOIN recent USING (itemId) ORDER BY n.itemId, n.rank`)) {
    const list = neighbours.get(String(itemId)) ?? [];
    list.push([String(nb), num(score)]);
    neighbours.set(String(itemId), list);
  }
  db.close();

  // 2. State at the cut-off through the stream's own script, on scratch keys.
  const runId = `batch-scratch-${Date.now().toString(36)}`;
  const store = new FeatureStore(redis, {
    ...config.features,
    ttlSec: 3600,
    channel: `recsys:batch:scratch`,
  });
  const sessions = new Map<string, SessionFeatures | null>();
  const list = [...users.values()];
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
    const pipeline = redis.pipeline();
    for (const user of slice) pipeline.hgetall(userFeaturesKey(`${runId}:${user.id}`));
    const replies = (await pipeline.exec()) ?? [];
    slice.forEach((user, k) => {
      const h = (replies[k]?.[1] ?? {}) as Record<string, string>;
      sessions.set(user.id, parseFeatures(h, cutoff, config.features.halfLifeMs));
    });
    await redis.unlink(...slice.map((user) => userFeaturesKey(`${runId}:${user.id}`)));
  }

  // 3 + 4. Candidates and features per user.
  const buildCandidates = (user: UserData): RankCandidate[] => {
    const byItem = new Map<string, Partial<Record<CandidateSource, number>>>();
    const add = (itemId: string, source: CandidateSource, score: number): void => {
      const s = byItem.get(itemId) ?? {};
      s[source] = Math.max(s[source] ?? 0, score);
      byItem.set(itemId, s);
    };
    for (const [itemId, score] of batchCands.get(user.id) ?? []) add(itemId, 'batch', score);
    const recent = [...new Set(user.events.map((e) => e.itemId).reverse())].slice(0, recentK);
    recent.forEach((itemId, pos) => {
      for (const [nb, score] of neighbours.get(itemId) ?? []) add(nb, 'covis', score / (1 + pos));
    });
    for (const [itemId, score] of trending) add(itemId, 'trending', score);
    for (const [itemId, score] of popular) add(itemId, 'popularity', score);
    return [...byItem].map(([itemId, scores]) => ({
      itemId,
      scores,
      item: items.get(itemId) ?? null,
    }));
  };
  const featuresOf = (user: UserData, candidates: RankCandidate[]): Float32Array => {
    const session = sessions.get(user.id) ?? null;
    const out = new Float32Array(candidates.length * FEATURE_COUNT);
    fillFeatures(
      out,
      {
        now: cutoff,
        session,
        userPriceLevel: userPriceLevel((session?.recent ?? []).map((i) => items.get(i))),
      },
      candidates,
    );
    return out;
  };

  const trainGroups: TrainingGroup[] = [];
  const evalUsers: { user: UserData; candidates: RankCandidate[]; features: Float32Array }[] = [];
  let qid = 0;
  for (const user of users.values()) {
    const candidates = buildCandidates(user);
    if (candidates.length === 0) continue;
    const features = featuresOf(user, candidates);
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
  const ranker = await loadRanker(train.onnxPath);
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
