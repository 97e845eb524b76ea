/**
 * The feed service: builds, ranks and returns one user's feed, and logs every feed served.
 * The HTTP/WebSocket server calls {@link FeedService.getFeed}; nothing here knows about HTTP.
 *
 * One request, in steps (three Redis round trips):
 *   1. one pipeline: the user's session features, the live batch version, the user's
 *      impression counts;
 *   2. concurrently: the user's batch candidates, co-visitation neighbours of the 5 most recent
 *      items, trending items (largest window) overall and in the 3 strongest categories (lists
 *      reused for a second), popular items overall and in those categories (kept per batch
 *      version); mixed into at most
 *      `config.serving.candidates` candidates the way training mixes them (`candidates.ts`);
 *   3. the catalog entries of the candidates and the recent items (cached in-process);
 *      purchased and unavailable items are dropped;
 *   4. features into a pooled Float32Array and one ONNX run; sorted by score; items the user
 *      saw `fatigueImpressions` times without an interaction move after the rest; at most
 *      `maxPerCategory` items of one category in the top 10;
 *   5. the record goes to the served log (queued, never awaited).
 *
 * Training/serving consistency. `RankItem.popularity` is the item's train popularity (decayed
 * interaction count) in training. Redis holds no per-item stats; the batch popularity lists do
 * carry exactly that number for the top items overall and per category, so serving reads the
 * overall list and the lists of the user's top categories and uses their score, and 0 for an
 * item in none of them (training would have its small count). The gap: long-tail items score
 * as popularity 0; closing it means publishing item stats with the batch output.
 *
 * Without a model (none registered yet, or none loadable) `getFeed` still answers, unranked:
 * candidates in mix order with score 1/(1 + position), `modelVersion` "none"; `readiness`
 * reports `model` not ok, so the server answers 503 on /readyz until a model is loaded.
 *
 * @example
 *   const feeds = startFeedService({ config, log, metrics });
 *   const feed = await feeds.getFeed('u42', 20);
 */
import { randomUUID } from 'node:crypto';
import { Counter, Histogram, type Registry } from 'prom-client';
import type { Config, Logger } from '../core/index.js';
import { readCandidates, readNeighbours, readPopular } from '../batch/publish.js';
import { openRegistry } from '../batch/registry/index.js';
import { CatalogStore, type CatalogItem } from '../stream/catalog.js';
import { parseFeatures, type SessionFeatures } from '../stream/features.js';
import { checkHealth } from '../stream/health.js';
import { parseImpressions } from '../stream/impressions.js';
import { BATCH, userFeaturesKey, userImpressionsKey } from '../stream/keys.js';
import { createRedis, redisHealth, type Redis } from '../stream/redis.js';
import { TrendingStore } from '../stream/trending.js';
import {
  demoteFatigued,
  diversify,
  excludeItems,
  mixCandidates,
  type MixedCandidate,
  type Scored,
} from './candidates.js';
import { startModelHolder, type ModelHolder } from './model.js';
import {
  FEATURE_COUNT,
  fillFeatures,
  SOURCES,
  userPriceLevel,
  type RankCandidate,
  type RankItem,
} from './rank-features.js';
import { startServedLog, type ServedLog } from './served-log.js';

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

export interface FeedService {
  /** Builds, ranks and returns a user's feed; the served record is written to Kafka asynchronously (off the request path). */
  getFeed(userId: string, limit: number): Promise<Feed>;
  /** Named checks for /readyz: redis, model (a model is loaded), kafka (served-log producer). */
  readiness(): Promise<{
    ok: boolean;
    checks: Record<string, { ok: boolean; ms: number; error?: string }>;
  }>;
  /** Current model version, or null before one is loaded. */
  modelVersion(): string | null;
  close(): Promise<void>;
}

export interface FeedDeps {
  config: Readonly<Config>;
  log: Logger;
  metrics: Registry;
  /** A Redis connection to use (not closed by the service); one is created when absent. */
  redis?: Redis;
}

/** The version served feeds carry while no model is loaded (unranked feed). */
export const NO_MODEL_VERSION = 'none';

// Mix sizes, the same as training's defaults (`batch/rerank.ts`: recentItems 5, popularK 50).
const RECENT_ITEMS = 5;
const POPULAR_K = 50;
/** Strongest categories whose trending and popular items are read. */
const TOP_CATEGORIES = 3;
/** Trending items read per category. */
const TRENDING_PER_CATEGORY = 20;
/** How long a trending list is reused, ms (trending moves in buckets of a minute). */
const TRENDING_CACHE_MS = 1000;
/** Positions the diversity rule applies to. */
const DIVERSITY_TOP = 10;

/**
 * Feature matrices for concurrent requests. The ONNX run is asynchronous and reads the matrix
 * in place (the tensor is a view, no copy), so a matrix belongs to one request from fill to
 * score; the pool hands out a free one (grown to the largest request seen) instead of
 * allocating ~30 KB per request.
 */
class MatrixPool {
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

export function startFeedService(deps: FeedDeps): FeedService {
  const { config, metrics } = deps;
  const log = deps.log.child({ component: 'feed' });
  const ownRedis = deps.redis === undefined;
  const redis = deps.redis ?? createRedis(config.redis.url, 'recsys-serving');
  const trending = new TrendingStore(redis, config.trending);
  // Availability and categories change rarely; 5 s keeps a just-disabled item out quickly.
  const catalog = new CatalogStore(redis, { cacheTtlMs: 5000, cacheSize: 200_000 });
  const trendWindow = Math.max(...config.trending.windowsSec);
  const cap = config.serving.candidates;
  const pool = new MatrixPool();

  // Lists shared by every user, kept in memory: parsing the popularity strings and reading the
  // trending sets on every request was a tenth of the server's CPU at 1,200 feeds/s. Popularity
  // belongs to a batch version and never changes within it; trending moves by buckets of
  // a minute, so a second of staleness is invisible.
  const popularCache = new Map<string, Promise<Scored[]>>();
  let popularVersion: number | null = null;
  const popularOf = (category: string | null, version: number): Promise<Scored[]> => {
    if (version !== popularVersion) {
      popularCache.clear();
      popularVersion = version;
    }
    const key = category ?? '';
    let hit = popularCache.get(key);
    if (!hit) {
      hit = readPopular(redis, category, cap, version);
      // A failed read is not kept.
      hit.catch(() => popularCache.delete(key));
      popularCache.set(key, hit);
    }
    return hit;
  };
  const trendingCache = new Map<string, { at: number; list: Promise<[string, number][]> }>();
  const trendingOf = (
    category: string | null,
    k: number,
    now: number,
  ): Promise<[string, number][]> => {
    const key = `${category ?? ''}|${k}`;
    const hit = trendingCache.get(key);
    if (hit && now - hit.at < TRENDING_CACHE_MS) return hit.list;
    const list = trending.top(trendWindow, category, k);
    list.catch(() => trendingCache.delete(key));
    trendingCache.set(key, { at: now, list });
    // Bounded: one entry per category ever asked for (categories are few).
    if (trendingCache.size > 10_000) trendingCache.clear();
    return list;
  };

  const rerankSeconds = new Histogram({
    name: 'recsys_rerank_seconds',
    help: 'feature filling and ONNX scoring of one feed, seconds',
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1],
    registers: [metrics],
  });
  const buildSeconds = new Histogram({
    name: 'recsys_feed_build_seconds',
    help: 'building one feed end to end (Redis reads, mixing, reranking), seconds',
    buckets: [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [metrics],
  });
  const candidatesTotal = new Counter({
    name: 'recsys_feed_candidates_total',
    help: 'candidates proposed to the reranker, by source (an item from several counts once per source)',
    labelNames: ['source'],
    registers: [metrics],
  });
  const bySource = Object.fromEntries(SOURCES.map((s) => [s, candidatesTotal.labels(s)])) as Record<
    (typeof SOURCES)[number],
    ReturnType<typeof candidatesTotal.labels>
  >;
  const feedsTotal = new Counter({
    name: 'recsys_feeds_total',
    help: 'feeds built, by whether a model ranked them',
    labelNames: ['ranked'],
    registers: [metrics],
  });
  const rankedFeeds = feedsTotal.labels('true');
  const unrankedFeeds = feedsTotal.labels('false');

  const models: ModelHolder = startModelHolder({
    registry: openRegistry(config.batch, log),
    log,
    metrics,
    pollMs: config.serving.modelPollMs,
  });
  const served: ServedLog = startServedLog({ config, log, metrics });

  async function getFeed(userId: string, limit: number): Promise<Feed> {
    const t0 = performance.now();
    const now = Date.now();

    // 1. Features, batch version, impressions: one round trip.
    const first = await redis
      .pipeline()
      .hgetall(userFeaturesKey(userId))
      .get(BATCH.current)
      .hgetall(userImpressionsKey(userId))
      .exec();
    const reply = (i: number): unknown => {
      const [err, value] = first?.[i] ?? [new Error('redis pipeline aborted'), null];
      if (err) throw err;
      return value;
    };
    const session: SessionFeatures | null = parseFeatures(
      reply(0) as Record<string, string>,
      now,
      config.features.halfLifeMs,
    );
    const rawVersion = reply(1) as string | null;
    const version = rawVersion === null ? null : Number(rawVersion);
    const impressions = parseImpressions(reply(2) as Record<string, string>);

    // 2. The sources, concurrently (ioredis writes them back to back on one connection).
    const recent = (session?.recent ?? []).slice(0, RECENT_ITEMS);
    const topCategories = (session?.affinities ?? []).slice(0, TOP_CATEGORIES).map(([c]) => c);
    const none = Promise.resolve([] as Scored[]);
    const [batch, neighbours, trendLists, popular, catPopular] = await Promise.all([
      version === null ? null : readCandidates(redis, userId, version),
      version === null ? new Map<string, Scored[]>() : readNeighbours(redis, recent, version),
      Promise.all([
        trendingOf(null, POPULAR_K, now),
        ...topCategories.map((c) => trendingOf(c, TRENDING_PER_CATEGORY, now)),
      ]),
      version === null ? none : popularOf(null, version),
      Promise.all(topCategories.map((c) => (version === null ? none : popularOf(c, version)))),
    ]);
    const mixed = mixCandidates(
      {
        batch: batch?.items ?? [],
        recent,
        neighbours,
        trending: trendLists.map((list) => list.map(([itemId, score]) => ({ itemId, score }))),
        popular: popular.slice(0, POPULAR_K),
      },
      cap,
    );

    // 3. Catalog facts; exclusions.
    const items = await catalog.get(
      recent.length > 0 ? mixed.map((c) => c.itemId).concat(recent) : mixed.map((c) => c.itemId),
    );
    const unavailable = new Set<string>();
    for (const c of mixed)
      if (items.get(c.itemId)?.isAvailable === false) unavailable.add(c.itemId);
    const kept = excludeItems(mixed, { purchased: session?.purchased ?? [], unavailable });
    // Counted per request, then one inc per source (not one per candidate and source).
    let nBatch = 0;
    let nCovis = 0;
    let nTrending = 0;
    let nPopular = 0;
    for (const c of kept) {
      const sc = c.scores;
      if (sc.batch !== undefined) nBatch++;
      if (sc.covis !== undefined) nCovis++;
      if (sc.trending !== undefined) nTrending++;
      if (sc.popularity !== undefined) nPopular++;
    }
    bySource.batch.inc(nBatch);
    bySource.covis.inc(nCovis);
    bySource.trending.inc(nTrending);
    bySource.popularity.inc(nPopular);

    // Popularity as training has it, where the batch lists carry it (module comment).
    const popularity = new Map<string, number>();
    for (const list of [popular, ...catPopular]) {
      for (const p of list) if (!popularity.has(p.itemId)) popularity.set(p.itemId, p.score);
    }
    const rankItem = (item: CatalogItem | undefined, itemId: string): RankItem | null =>
      item
        ? {
            categoryL1: item.categoryL1,
            price: item.price,
            createdAt: item.createdAt,
            popularity: popularity.get(itemId) ?? 0,
          }
        : null;

    // 4. Rerank.
    const lease = models.acquire();
    let scores: ArrayLike<number>;
    if (lease && kept.length > 0) {
      const tr = performance.now();
      const candidates: RankCandidate[] = kept.map((c) => ({
        itemId: c.itemId,
        scores: c.scores,
        item: rankItem(items.get(c.itemId), c.itemId),
      }));
      const matrix = pool.take(candidates.length);
      try {
        fillFeatures(
          matrix,
          {
            now,
            session,
            userPriceLevel: userPriceLevel((session?.recent ?? []).map((i) => items.get(i))),
          },
          candidates,
        );
        scores = await lease.ranker.score(matrix, candidates.length);
      } finally {
        pool.give(matrix);
        lease.release();
      }
      rerankSeconds.observe((performance.now() - tr) / 1000);
      rankedFeeds.inc();
    } else {
      lease?.release();
      scores = kept.map((_, i) => 1 / (1 + i));
      unrankedFeeds.inc();
    }
    const order = kept
      .map((_, i) => i)
      .sort((a, b) => (scores[b] as number) - (scores[a] as number) || a - b);
    const ranked: FeedItem[] = order.map((i) => {
      const c = kept[i] as MixedCandidate;
      return {
        itemId: c.itemId,
        score: scores[i] as number,
        source: c.source,
        categoryL1: items.get(c.itemId)?.categoryL1 ?? null,
      };
    });
    const rested = demoteFatigued(
      ranked,
      impressions,
      config.serving.fatigueImpressions,
      session?.recent ?? [],
    );
    const feedItems = diversify(rested, config.serving.maxPerCategory, DIVERSITY_TOP).slice(
      0,
      Math.max(0, limit),
    );

    const latencyMs = performance.now() - t0;
    buildSeconds.observe(latencyMs / 1000);
    const feed: Feed = {
      requestId: randomUUID(),
      userId,
      ts: now,
      items: feedItems,
      modelVersion: lease?.version ?? NO_MODEL_VERSION,
      latencyMs,
    };
    // 5. Off the request path.
    served.write({
      requestId: feed.requestId,
      userId,
      ts: now,
      items: feedItems.map((i) => ({ itemId: i.itemId, score: i.score, source: i.source })),
      modelVersion: feed.modelVersion,
      latencyMs,
    });
    return feed;
  }

  return {
    getFeed,
    readiness: () =>
      checkHealth(
        {
          redis: () => redisHealth(redis, config.healthTimeoutMs),
          model: () => {
            if (models.version() === null) throw new Error('no model loaded');
          },
          kafka: () => served.check(),
        },
        config.healthTimeoutMs,
      ),
    modelVersion: () => models.version(),
    async close() {
      await models.close();
      await served.close();
      if (ownRedis) redis.disconnect();
    },
  };
}
