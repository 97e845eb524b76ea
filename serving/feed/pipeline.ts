/**
 * One feed, in steps (usually one Redis round trip; the connection coalesces writes, so
 * concurrent requests share writes):
 *   1. `readUser`: together, the user's session features, the live batch version, the user's
 *      impression counts, and the user's batch candidates of the version the previous request
 *      saw (read again, in a second trip, only when the version has just moved);
 *   2. `gatherCandidates`: concurrently, from memory after the first read (`caches.ts`):
 *      co-visitation neighbours of the `seedItems` most recent items (batch and online, merged),
 *      trending items overall and in the 3 strongest categories, popular items; mixed into at
 *      most `config.serving.candidates` rows the way training mixes them (`mix.ts`);
 *   3. `fillFacts`: the catalog facts of the rows and the recent items; unavailable items are
 *      dropped; the rows' train popularity; the profile features' lists (`profile.ts`);
 *   4. `score`: features into a pooled matrix (`fillFeatureRows`, the code training runs too)
 *      and one ONNX run; without a model, the heuristic blend of the same features (`blend.ts`);
 *   5. `orderFeed`: by score; items the user saw `fatigueImpressions` times (when set) without an
 *      interaction move after the rest; at most `maxPerCategory` of one category in the top 10;
 *   6. `servedRecord`: the record goes to the served log (queued, never awaited); a sampled share
 *      carries the candidates with their feature rows (`feature-log.ts`), the batch's training rows.
 *
 * Training/serving consistency: the popularity feature is the item's train popularity, from
 * the batch's list of the item's own category (0 without statistics), what training used.
 */
import { randomUUID } from 'node:crypto';
import type { Config } from '../../core/index.js';
import type { CandidateStore } from '../../store/candidates.js';
import type { RedisClient } from '../../store/redis.js';
import { readFeatures, type SessionFeatures } from '../../store/session-features.js';
import type { ImpressionStore } from '../../store/impressions.js';
import type { ItemTable } from '../item-table.js';
import {
  demoteFatigued,
  diversify,
  keepRows,
  mixCandidates,
  modelRowOrder,
  shownSource,
  type CandidateRows,
} from '../mix.js';
import { blendScores } from '../blend.js';
import { exploreNewItems } from '../explore.js';
import type { ModelHolder } from '../model.js';
import { descendingOrder } from '../order.js';
import { FEATURE_COUNT, fillFeatureRows, SOURCES, userPriceLevel } from '../rank-features.js';
import { EMPTY_LIST, type ScoredList } from '../scored-list.js';
import { profileScores } from '../profile.js';
import type { ServedLog } from '../served-log.js';
import type { LoggedCandidates } from '../../schemas/index.js';
import { logCandidates, sampled } from './feature-log.js';
import { POPULAR_K, type FeedCaches, type VersionState } from './caches.js';
import type { FeedMetrics } from './metrics.js';

export interface FeedItem {
  itemId: string;
  score: number;
  source: string;
  categoryL1: string | null;
}

export interface Feed {
  requestId: string;
  userId: string;
  ts: number;
  items: FeedItem[];
  modelVersion: string;
  latencyMs: number;
}

/** The version served feeds carry while no model serves (the heuristic blend, `blend.ts`). */
export const NO_MODEL_VERSION = 'blend';

// Mix sizes (the seed items, `RECSYS_FEED_SEED_ITEMS`, are training's too: `batch/rerank.ts`).
/** Strongest categories whose trending items are read. */
const TOP_CATEGORIES = 3;
/** Trending items read per category. */
const TRENDING_PER_CATEGORY = 20;
/** Positions the diversity rule applies to. */
const DIVERSITY_TOP = 10;
const NO_NEIGHBOURS: ReadonlyMap<string, ScoredList> = new Map();
const NO_IMPRESSIONS: Map<string, number> = new Map();

/** What every feed of a process shares. */
export interface FeedContext {
  config: Readonly<Config>;
  redis: RedisClient;
  candidates: CandidateStore;
  impressions: ImpressionStore;
  caches: FeedCaches;
  models: ModelHolder;
  served: ServedLog;
  metrics: FeedMetrics;
  pool: MatrixPool;
  /** The batch version the latest request read (the next reads its candidates in step 1). */
  liveVersion: number | null;
}

/**
 * Feature matrices for concurrent requests. The ONNX run reads the matrix in place, so a
 * matrix belongs to one request from fill to score; the pool hands out a free one (grown to the
 * largest request seen) instead of allocating one per request.
 */
export class MatrixPool {
  readonly #free: Float32Array[] = [];

  take(rows: number): Float32Array {
    const need = rows * FEATURE_COUNT;
    const m = this.#free.pop();
    if (m && m.length >= need) return m;
    return new Float32Array(Math.max(need, (m?.length ?? 0) * 2));
  }

  give(m: Float32Array): void {
    if (this.#free.length < 64) this.#free.push(m);
  }
}

/**
 * One feed, steps 1-6 of the module comment. `record` false (warm-up) leaves no served record and
 * no metric behind, and so does an `attempt` abandoned before it finished (`fallback.ts`).
 */
export async function buildFeed(
  ctx: FeedContext,
  userId: string,
  limit: number,
  record: boolean,
  attempt: { abandoned: boolean } = { abandoned: false },
): Promise<Feed> {
  const t0 = performance.now();
  const now = Date.now();
  const user = await readUser(ctx, userId, now);
  const rows = await gatherCandidates(ctx, user, record, now);
  const { recentKeys, profile } = await fillFacts(ctx, user, rows, now, record);
  const scored = await score(ctx, user, rows, recentKeys, profile, now, record);
  const ranked = orderFeed(ctx, user, rows, scored, limit);
  const items = await exploreNewItems(
    ctx,
    user.userId,
    user.session,
    user.state.table,
    ranked,
    now,
  );
  const latencyMs = performance.now() - t0;
  const feed: Feed = {
    requestId: randomUUID(),
    userId,
    ts: now,
    items,
    modelVersion: scored.modelVersion,
    latencyMs,
  };
  if (record && !attempt.abandoned) servedRecord(ctx, feed, scored.logged);
  return feed;
}

/** What step 1 read of the user, and the version state the request uses throughout. */
interface UserRead {
  userId: string;
  session: SessionFeatures | null;
  version: number | null;
  impressions: Map<string, number>;
  state: VersionState;
  /** The version step 1 guessed, its candidates (from memory, or read in the same trip). */
  guessed: number | null;
  known: ScoredList | undefined;
  guessedBatch: Promise<ScoredList> | null;
}

/** Step 1: features, batch version, impressions and (guessed) batch candidates, one trip. */
async function readUser(ctx: FeedContext, userId: string, now: number): Promise<UserRead> {
  const guessed = ctx.liveVersion;
  const known = guessed === null ? undefined : ctx.caches.cachedUser(userId);
  const guessedBatch =
    guessed === null || known !== undefined ? null : ctx.candidates.userCandidates(userId, guessed);
  // Not awaited until the others are: a failed read must not reject unobserved.
  guessedBatch?.catch(() => undefined);
  const [session, version, impressions] = await Promise.all([
    readFeatures(ctx.redis, userId, now, ctx.config.features.halfLifeMs),
    ctx.candidates.currentVersion(),
    // Impressions matter only to fatigue (off at 0): not read otherwise.
    ctx.config.serving.fatigueImpressions > 0 ? ctx.impressions.read(userId) : NO_IMPRESSIONS,
  ]);
  ctx.liveVersion = version;
  return {
    userId,
    session,
    version,
    impressions,
    state: ctx.caches.stateFor(version),
    guessed,
    known,
    guessedBatch,
  };
}

/** Step 2: the candidate sources, read concurrently, mixed into rows. */
async function gatherCandidates(
  ctx: FeedContext,
  user: UserRead,
  record: boolean,
  now: number,
): Promise<CandidateRows> {
  const { caches } = ctx;
  const { session, version, guessed, known, state } = user;
  const recent = (session?.recent ?? []).slice(0, ctx.config.serving.seedItems);
  const topCategories = (session?.affinities ?? []).slice(0, TOP_CATEGORIES).map(([c]) => c);
  const onMiss = record ? () => ctx.metrics.userCacheMisses.inc() : undefined;
  const [batch, batchNeighbours, onlineNeighbours, trending, overall] = await Promise.all([
    version === guessed && known !== undefined
      ? known
      : caches.userCandidates(
          state,
          user.userId,
          version === null || version === guessed
            ? (user.guessedBatch ?? Promise.resolve(EMPTY_LIST))
            : ctx.candidates.userCandidates(user.userId, version),
          onMiss,
        ),
    version === null ? NO_NEIGHBOURS : caches.neighbours(recent, state),
    caches.onlineNeighbours(recent, now),
    Promise.all([
      caches.trending(null, POPULAR_K, now),
      ...topCategories.map((c) => caches.trending(c, TRENDING_PER_CATEGORY, now)),
    ]),
    version === null ? null : caches.overall(state),
  ]);
  if (record && batch === known) ctx.metrics.userCacheHits.inc();
  // Purchased and consumed items (the consumed event types, `FeatureOptions.consumedTypes`)
  // are never shown again: left out before the mix's cap.
  const excluded: number[] = [];
  if (session) {
    for (const id of session.purchased) excluded.push(state.table.intern(id));
    for (const id of session.consumed) excluded.push(state.table.intern(id));
  }
  return mixCandidates(
    {
      batch,
      recent,
      neighbours: caches.mergeNeighbours(batchNeighbours, onlineNeighbours),
      trending,
      popular: overall ?? EMPTY_LIST,
    },
    ctx.config.serving.candidates,
    state.table,
    excluded,
  );
}

/**
 * Step 3: catalog facts of the rows and of all the user's recent items (their prices give the
 * user's price level, as in training); drops unavailable items; reads the popularity of the
 * rows' categories. Returns the recent items' keys and the rows' `profileScores`.
 */
async function fillFacts(
  ctx: FeedContext,
  user: UserRead,
  rows: CandidateRows,
  now: number,
  record: boolean,
): Promise<{ recentKeys: number[]; profile: Float64Array }> {
  const { table } = user.state;
  const { session, state } = user;
  const recent = session?.recent ?? [];
  const recentKeys = recent.map((id) => table.intern(id));
  const noLists = user.version === null || recent.length === 0;
  const [, , ease, covis] = await Promise.all([
    ctx.caches.readFacts(table, rows.keys, rows.n, now),
    recentKeys.length > 0 ? ctx.caches.readFacts(table, recentKeys, recentKeys.length, now) : null,
    noLists ? NO_NEIGHBOURS : ctx.caches.neighbours(recent, state, 'ease'),
    noLists ? NO_NEIGHBOURS : ctx.caches.neighbours(recent, state),
  ]);
  keepRows(rows, (i) => {
    const k = rows.keys[i] as number;
    return table.known[k] === 0 || table.available[k] === 1;
  });
  if (record) countSources(ctx, rows);
  if (user.version !== null) {
    // The lists of the rows' categories are read once per version, then a column read per row.
    let loading: Set<number> | null = null;
    for (let i = 0; i < rows.n; i++) {
      const k = rows.keys[i] as number;
      const c = table.category[k] as number;
      if (table.known[k] === 1 && table.popularityRead[c] === 0) (loading ??= new Set()).add(c);
    }
    if (loading) {
      await Promise.all([...loading].map((c) => ctx.caches.categoryPopularity(user.state, c)));
    }
  }
  return { recentKeys, profile: profileScores(recent, ease, covis, rows.keys, rows.n, table) };
}

/** Candidates per source, counted per request and then one increment per source. */
function countSources(ctx: FeedContext, rows: CandidateRows): void {
  const perSource = new Uint32Array(SOURCES.length);
  for (let i = 0; i < rows.n; i++) {
    const bits = rows.proposed[i] as number;
    for (let s = 0; s < SOURCES.length; s++) {
      if (bits & (1 << s)) perSource[s] = (perSource[s] as number) + 1;
    }
  }
  SOURCES.forEach((s, k) => ctx.metrics.bySource[s].inc(perSource[k] as number));
}

interface Scored {
  /** Score per row. */
  scores: ArrayLike<number>;
  /** Room for the final order (shares one allocation with the scores). */
  orderBuffer: ArrayBuffer;
  modelVersion: string;
  /** The rows and features, when this feed is one of the logged share (`feature-log.ts`). */
  logged: LoggedCandidates | null;
}

/** Step 4: features, then one ONNX run, or the heuristic blend while no model serves. */
async function score(
  ctx: FeedContext,
  user: UserRead,
  rows: CandidateRows,
  recentKeys: readonly number[],
  profile: Float64Array,
  now: number,
  record: boolean,
): Promise<Scored> {
  const n = rows.n;
  const lease = ctx.models.acquire();
  // The model's row order, the scores by row and the final order: one allocation.
  const orderBuffer = new ArrayBuffer(12 * n);
  const byRow = new Float32Array(orderBuffer, 4 * n, n);
  if (n === 0) {
    lease?.release();
    return {
      scores: byRow,
      orderBuffer,
      modelVersion: lease?.version ?? NO_MODEL_VERSION,
      logged: null,
    };
  }
  let logged: LoggedCandidates | null = null;
  const started = performance.now();
  const { table } = user.state;
  const matrix = ctx.pool.take(n);
  try {
    const prices = recentKeys.map((k) =>
      table.known[k] === 1 ? { price: priceOrNull(table.price[k] as number) } : null,
    );
    // The model sees the rows grouped (`modelRowOrder`); scores come back in row order. The
    // blend reads rows in row order.
    const at = lease
      ? modelRowOrder(rows, table.known, new Uint32Array(orderBuffer, 0, n))
      : undefined;
    fillFeatureRows(
      matrix,
      { now, session: user.session, userPriceLevel: userPriceLevel(prices) },
      {
        n,
        keys: rows.keys,
        proposed: rows.proposed,
        scores: rows.scores,
        items: table,
        sourcePos: rows.sourcePos,
        profile,
      },
      at,
    );
    if (record && sampled(ctx.config.serving.logFeaturesShare)) {
      logged = logCandidates(matrix, n, rows.ids, at);
    }
    if (lease && at) {
      const grouped = await lease.ranker.score(matrix, n);
      for (let i = 0; i < n; i++) byRow[i] = grouped[at[i] as number] as number;
    } else {
      blendScores(matrix, n, byRow, user.state.blend);
    }
  } finally {
    ctx.pool.give(matrix);
    lease?.release();
  }
  if (record) {
    ctx.metrics.rerankSeconds.observe((performance.now() - started) / 1000);
    (lease ? ctx.metrics.rankedFeeds : ctx.metrics.unrankedFeeds).inc();
  }
  return { scores: byRow, orderBuffer, modelVersion: lease?.version ?? NO_MODEL_VERSION, logged };
}

/** Step 5: by score, fatigued items after the rest, diversity in the top; `limit` items. */
function orderFeed(
  ctx: FeedContext,
  user: UserRead,
  rows: CandidateRows,
  scored: Scored,
  limit: number,
): FeedItem[] {
  const { serving } = ctx.config;
  const { table } = user.state;
  const n = rows.n;
  const order = descendingOrder(scored.scores, n, new Uint32Array(scored.orderBuffer, 8 * n, n));
  const rested =
    user.impressions.size === 0 || serving.fatigueImpressions === 0
      ? order
      : demoteFatigued(
          order,
          (i) => rows.ids[i] as string,
          user.impressions,
          serving.fatigueImpressions,
          user.session?.recent ?? [],
        );
  const categoryOf = (i: number): number | null => {
    const k = rows.keys[i] as number;
    return table.known[k] === 1 ? (table.category[k] as number) : null;
  };
  const top = diversify(
    rested,
    categoryOf,
    serving.maxPerCategory,
    DIVERSITY_TOP,
    Math.max(0, limit),
  );
  return top.map((i) => ({
    itemId: rows.ids[i] as string,
    score: scored.scores[i] as number,
    source: shownSource(rows, i),
    categoryL1: categoryName(table, categoryOf(i)),
  }));
}

/** Step 6: the served record, off the request path. */
export function servedRecord(
  ctx: FeedContext,
  feed: Feed,
  candidates: LoggedCandidates | null = null,
): void {
  ctx.metrics.buildSeconds.observe(feed.latencyMs / 1000);
  ctx.served.write({
    requestId: feed.requestId,
    userId: feed.userId,
    ts: feed.ts,
    items: feed.items.map((i) => ({ itemId: i.itemId, score: i.score, source: i.source })),
    modelVersion: feed.modelVersion,
    latencyMs: feed.latencyMs,
    candidates,
  });
}

function priceOrNull(price: number): number | null {
  return Number.isNaN(price) ? null : price;
}

export function categoryName(table: ItemTable, category: number | null): string | null {
  return category === null ? null : (table.categories[category] ?? null);
}
