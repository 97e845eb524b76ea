/**
 * The feed service: builds, ranks and returns one user's feed, and logs every feed served.
 * The HTTP/WebSocket server calls {@link FeedService.getFeed}; nothing here knows about HTTP.
 *
 * One request, in steps (usually one Redis round trip; the connection coalesces writes, so
 * concurrent requests share writes):
 *   1. together: the user's session features, the live batch version, the user's impression
 *      counts, and the user's batch candidates of the version the previous request saw (read
 *      again, in a second trip, only when the version has just moved);
 *   2. concurrently, all kept in memory after the first read: co-visitation neighbours of the 5
 *      most recent items (per batch version, `NEIGHBOUR_CACHE_LISTS` lists), trending items
 *      (largest window) overall and in the 3 strongest categories (reused for a second), popular
 *      items (per batch version); mixed into at most `config.serving.candidates` candidates the
 *      way training mixes them (`candidates.ts`), as columns rather than an object each;
 *   3. the catalog facts of the candidates and the recent items (kept in the batch version's
 *      `ItemTable`, which numbers the items and holds what serving knows about each in typed
 *      arrays; re-read in the background once `catalogTtlMs` old); purchased and unavailable
 *      items are dropped;
 *   4. features into a pooled Float32Array (`fillFeatureRows`, the code training runs too) and
 *      one ONNX run; ordered by score; items the user saw `fatigueImpressions` times without an
 *      interaction move after the rest; at most `maxPerCategory` items of one category in the
 *      top 10; only the first `limit` become objects;
 *   5. the record goes to the served log (queued, never awaited).
 *
 * Training/serving consistency. `RankItem.popularity` is the item's train popularity (decayed
 * interaction count) in training, 0 for an item without statistics. The batch output carries
 * the same number for every item with statistics, one list per category (`ipop:v<N>:c:<cat>`,
 * to 4 decimals); serving reads the list of each candidate's own category once per batch
 * version and uses its value, 0 for an item not in it: what training used.
 *
 * Without a model (none registered yet, or none loadable) `getFeed` still answers, unranked:
 * candidates in mix order with score 1/(1 + position), `modelVersion` "none"; `readiness`
 * reports `model` not ok, so the server answers 503 on /readyz until a model is loaded, and
 * `warm` not ok until warm-up feeds were built with it (`WARMUP_FEEDS`, nothing logged).
 *
 * @example
 *   const feeds = startFeedService({ config, log, metrics });
 *   const feed = await feeds.getFeed('u42', 20);
 */
import { randomUUID } from 'node:crypto';
import { Counter, Histogram, type Registry } from 'prom-client';
import { checkHealth, type Config, type Logger, sleep } from '../core/index.js';
import { decodeScored } from '../batch/publish.js';
import { openRegistry } from '../store/registry/index.js';
import { CatalogStore } from '../store/catalog.js';
import { parseFeatures, type SessionFeatures } from '../store/session-features.js';
import { parseImpressions } from '../stream/roles/impressions.js';
import { BATCH, userFeaturesKey, userImpressionsKey } from '../store/keys.js';
import { createRedis, redisHealth, type Redis } from '../store/redis.js';
import { TrendingStore } from '../store/trending.js';
import {
  demoteFatigued,
  diversify,
  EMPTY_LIST,
  keepRows,
  mixCandidates,
  modelRowOrder,
  NS,
  shownSource,
  type ScoredList,
} from './mix.js';
import { ITEM_TABLE_LIMIT, ItemTable } from './item-table.js';
import { startModelHolder, type ModelHolder } from './model.js';
import { descendingOrder } from './order.js';
import {
  FEATURE_COUNT,
  fillFeatureRows,
  popularityLog,
  SOURCES,
  userPriceLevel,
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
  /**
   * Catalog entries changed (CATALOG_CHANNEL): their cached copies are dropped; with no ids,
   * every cached entry is (change messages may have been missed).
   */
  itemsChanged(itemIds?: readonly string[]): void;
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
const NO_NEIGHBOURS: ReadonlyMap<string, ScoredList> = new Map();
/**
 * Neighbour lists kept in memory per process (oldest out first): at 50 neighbours a list is
 * some 3 KB, so about 60 MB at most; recent items follow item popularity, so most reads hit.
 */
const NEIGHBOUR_CACHE_LISTS = 20_000;
/** Feeds built (and thrown away) before the service reports ready, and users they are for. */
const WARMUP_FEEDS = 1000;
const WARMUP_USERS = 500;
const FEATURES_KEY = /^\{u:(.*)\}:f$/s;

/** The first `k` entries of a list (the list itself when it is no longer). */
function firstOf(list: ScoredList, k: number): ScoredList {
  if (list.ids.length <= k) return list;
  return {
    ids: list.ids.slice(0, k),
    scores: Array.prototype.slice.call(list.scores, 0, k) as number[],
  };
}

function priceOrNull(price: number): number | null {
  return Number.isNaN(price) ? null : price;
}

function categoryName(table: ItemTable, category: number | null): string | null {
  return category === null ? null : (table.categories[category] ?? null);
}

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
  const redis =
    deps.redis ?? createRedis(config.redis.url, 'recsys-serving', { coalesceWrites: true });
  const trending = new TrendingStore(redis, config.trending);
  // Catalog reads only: the item table keeps the entries (as columns).
  const catalog = new CatalogStore(redis, { cacheTtlMs: 0, cacheSize: 0 });
  const trendWindow = Math.max(...config.trending.windowsSec);
  const cap = config.serving.candidates;
  // Entries written through `CatalogStore` are dropped at once (CATALOG_CHANNEL,
  // `itemsChanged`) and read before use, and all of them after the subscriber reconnects; the
  // TTL only bounds staleness when a change was never announced. At 5 s every process re-read
  // every item it uses every 5 s, in bursts (for the bench's 2,000 items, some 3,500 reads by
  // the two workers within 2 s, every 5 s), a cost that grows with the catalog, not traffic.
  // Items read together (at start, after a reconnect) would also expire together: each item's
  // TTL is shortened by up to half, by a fixed fraction of its own (`ttlSpread`), so their
  // re-reads spread over half a TTL instead of coming as one burst.
  const catalogTtlMs = config.serving.catalogTtlMs;
  const ttlSpread = (k: number): number =>
    (catalogTtlMs / 2) * (((k * 2654435761) >>> 0) / 2 ** 32);
  const userCacheSize = config.serving.userCache;
  const pool = new MatrixPool();
  /** The batch version the latest request read (the next reads its candidates in the first trip). */
  let liveVersion: number | null = null;

  // Per batch version: the item table (items as numbers, their catalog facts, popularity and
  // neighbour lists as columns), the popularity lists read so far, and the order neighbour
  // lists were cached in. Popularity and neighbours belong to a batch version and never change
  // within it; parsing and reading them on every request was a tenth of the server's CPU at
  // 1,200 feeds/s. A request keeps the state it started with even if the version moves
  // meanwhile. A new version (or a table past ITEM_TABLE_LIMIT items) starts a new state.
  interface VersionState {
    table: ItemTable;
    /** The overall popular list (a candidate source). */
    overall: Promise<ScoredList> | null;
    /** Per category number: its popularity list, being read or read. */
    categories: Map<number, Promise<void>>;
    /** Keys with a cached neighbour entry, oldest first, from `neighbourHead`. */
    neighbourKeys: number[];
    neighbourHead: number;
    /** Users' batch candidates (ids shared with the table), oldest first; `userCache` at most. */
    users: Map<string, ScoredList>;
  }
  let state: VersionState | null = null;
  const stateFor = (version: number | null): VersionState => {
    if (state === null || state.table.version !== version || state.table.size > ITEM_TABLE_LIMIT) {
      state = {
        table: new ItemTable(version),
        overall: null,
        categories: new Map(),
        neighbourKeys: [],
        neighbourHead: 0,
        users: new Map(),
      };
    }
    return state;
  };
  /** Records popularity values (first one wins: an item's value is the same in every list). */
  const notePopularity = (table: ItemTable, list: ScoredList): void => {
    for (let i = 0; i < list.ids.length; i++) {
      const k = table.intern(list.ids[i] as string);
      const known = table.popularityLog[k] as number;
      if (known !== known) table.popularityLog[k] = popularityLog(list.scores[i] as number);
    }
  };
  const overallOf = (st: VersionState): Promise<ScoredList> => {
    if (st.overall === null) {
      const version = st.table.version as number;
      const read = redis.get(BATCH.popular(null, version)).then((raw) => {
        const list = decodeScored(raw);
        notePopularity(st.table, list);
        return firstOf(list, POPULAR_K);
      });
      // A failed read is not kept.
      read.catch(() => {
        if (st.overall === read) st.overall = null;
      });
      st.overall = read;
    }
    return st.overall;
  };
  /**
   * Reads a category's popularity: every item's (`ipop`), or the category's popular list for a
   * version published before `ipop` existed.
   */
  const categoryPopularity = (st: VersionState, category: number): Promise<void> => {
    let hit = st.categories.get(category);
    if (!hit) {
      const { table } = st;
      const version = table.version as number;
      const name = table.categories[category] as string;
      hit = redis
        .get(BATCH.itemPopularity(name, version))
        .then((raw) => raw ?? redis.get(BATCH.popular(name, version)))
        .then((raw) => {
          notePopularity(table, decodeScored(raw));
          table.popularityRead[category] = 1;
        });
      hit.catch(() => st.categories.delete(category));
      st.categories.set(category, hit);
    }
    return hit;
  };

  /**
   * Catalog facts of the given keys into the table. Keys never read (or forgotten after a
   * change, `itemsChanged`) are read now, in one pipelined round trip the request waits for.
   * Keys read their TTL ago or more (`catalogTtlMs`, less `ttlSpread`) are used as they are
   * and read again in the background, once however many requests ask meanwhile: when entries
   * expired, every request in flight used to read the same few hundred again, and wait for
   * them.
   */
  const readFacts = async (table: ItemTable, keys: ArrayLike<number>, n: number, now: number) => {
    let missing: number[] | null = null;
    let stale: number[] | null = null;
    for (let i = 0; i < n; i++) {
      const k = keys[i] as number;
      const at = table.readAt[k] as number;
      if (at === 0) (missing ??= []).push(k);
      else if (now - at >= catalogTtlMs - ttlSpread(k) && table.refreshing[k] === 0) {
        table.refreshing[k] = 1;
        (stale ??= []).push(k);
      }
    }
    if (stale !== null) {
      const keys = stale;
      fetchFacts(table, keys, now)
        .catch((err: unknown) =>
          log.warn({ err: (err as Error).message }, 'catalog refresh failed; retried on next use'),
        )
        .finally(() => {
          for (const k of keys) table.refreshing[k] = 0;
        });
    }
    if (missing !== null) await fetchFacts(table, [...new Set(missing)], now);
  };
  const fetchFacts = async (table: ItemTable, keys: number[], now: number): Promise<void> => {
    const forgets = table.forgets;
    const found = await catalog.lookup(keys.map((k) => table.ids[k] as string));
    // Changed while the read was in flight: the answer may predate the change.
    const at = table.forgets === forgets ? now : 0;
    keys.forEach((k, j) => table.setFacts(k, at, found[j] ?? null));
  };

  const trendingCache = new Map<string, { at: number; list: Promise<ScoredList> }>();
  const trendingOf = (category: string | null, k: number, now: number): Promise<ScoredList> => {
    const key = `${category ?? ''}|${k}`;
    const hit = trendingCache.get(key);
    if (hit && now - hit.at < TRENDING_CACHE_MS) return hit.list;
    const list = trending.top(trendWindow, category, k).then((top) => ({
      ids: top.map(([id]) => id),
      scores: Float64Array.from(top, ([, count]) => count),
    }));
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
  const userCacheTotal = new Counter({
    name: 'recsys_feed_user_cache_total',
    help: "feeds whose user's batch candidates were in memory (hit) or read from Redis (miss)",
    labelNames: ['result'],
    registers: [metrics],
  });
  const userCacheHits = userCacheTotal.labels('hit');
  const userCacheMisses = userCacheTotal.labels('miss');

  const models: ModelHolder = startModelHolder({
    registry: openRegistry(config.batch, log),
    log,
    metrics,
    pollMs: config.serving.modelPollMs,
  });
  const served: ServedLog = startServedLog({ config, log, metrics });

  /** One feed; `record` false (warm-up) leaves no served record and no metric behind. */
  async function build(userId: string, limit: number, record: boolean): Promise<Feed> {
    const t0 = performance.now();
    const now = Date.now();

    // 1. Features, batch version, impressions, and the batch candidates of the version the last
    // request saw: one round trip (one write). When the version has just moved, the
    // candidates are read again for the new one.
    const guessed = liveVersion;
    const known = guessed === null ? undefined : state?.users.get(userId);
    const [rawFeatures, rawVersion, rawImpressions, guessedBatch] = await Promise.all([
      redis.hgetall(userFeaturesKey(userId)),
      redis.get(BATCH.current),
      redis.hgetall(userImpressionsKey(userId)),
      guessed === null || known !== undefined ? null : redis.get(BATCH.candidates(userId, guessed)),
    ]);
    const session: SessionFeatures | null = parseFeatures(
      rawFeatures,
      now,
      config.features.halfLifeMs,
    );
    const version = rawVersion === null ? null : Number(rawVersion);
    liveVersion = version;
    const impressions = parseImpressions(rawImpressions);
    const st = stateFor(version);
    const table = st.table;

    // 2. The sources, concurrently (ioredis writes them back to back on one connection).
    const recent = (session?.recent ?? []).slice(0, RECENT_ITEMS);
    const topCategories = (session?.affinities ?? []).slice(0, TOP_CATEGORIES).map(([c]) => c);
    const [batch, neighbours, trendLists, overall] = await Promise.all([
      version === guessed && known !== undefined
        ? known
        : batchOf(
            st,
            userId,
            record,
            version === null || version === guessed
              ? guessedBatch
              : redis.get(BATCH.candidates(userId, version)),
          ),
      version === null ? NO_NEIGHBOURS : neighboursOf(recent, st),
      Promise.all([
        trendingOf(null, POPULAR_K, now),
        ...topCategories.map((c) => trendingOf(c, TRENDING_PER_CATEGORY, now)),
      ]),
      version === null ? null : overallOf(st),
    ]);
    if (record && batch === known) userCacheHits.inc();
    const rows = mixCandidates(
      { batch, recent, neighbours, trending: trendLists, popular: overall ?? EMPTY_LIST },
      cap,
      table,
    );

    // 3. Catalog facts of the rows and of all the user's recent items (their prices give the
    // user's price level, as in training); exclusions.
    const allRecent = session?.recent ?? [];
    const recentKeys = allRecent.map((id) => table.intern(id));
    const bought =
      session && session.purchased.length > 0
        ? new Set(session.purchased.map((id) => table.intern(id)))
        : null;
    await Promise.all([
      readFacts(table, rows.keys, rows.n, now),
      recentKeys.length > 0 ? readFacts(table, recentKeys, recentKeys.length, now) : null,
    ]);
    keepRows(rows, (i) => {
      const k = rows.keys[i] as number;
      return (table.known[k] === 0 || table.available[k] === 1) && !bought?.has(k);
    });
    const n = rows.n;
    // Counted per request, then one inc per source (not one per candidate and source).
    const perSource = new Uint32Array(NS);
    for (let i = 0; i < n; i++) {
      const b = rows.proposed[i] as number;
      for (let s = 0; s < NS; s++) if (b & (1 << s)) perSource[s] = (perSource[s] as number) + 1;
    }
    if (record) SOURCES.forEach((s, k) => bySource[s].inc(perSource[k] as number));

    // Popularity as training has it (module comment), from the item's own category list: the
    // lists of the rows' categories are read once per version, then a column read per row.
    if (version !== null) {
      let loading: Set<number> | null = null;
      for (let i = 0; i < n; i++) {
        const k = rows.keys[i] as number;
        const c = table.category[k] as number;
        if (table.known[k] === 1 && table.popularityRead[c] === 0) (loading ??= new Set()).add(c);
      }
      if (loading) await Promise.all([...loading].map((c) => categoryPopularity(st, c)));
    }

    // 4. Rerank.
    const lease = models.acquire();
    let scores: ArrayLike<number>;
    // The model's row order, the scores by row and the final order: one allocation.
    const orderBuffer = new ArrayBuffer(12 * n);
    if (lease && n > 0) {
      const tr = performance.now();
      const matrix = pool.take(n);
      try {
        const prices = recentKeys.map((k) =>
          table.known[k] === 1 ? { price: priceOrNull(table.price[k] as number) } : null,
        );
        // The model sees the rows grouped (`modelRowOrder`); scores come back in row order.
        const at = modelRowOrder(rows, table.known, new Uint32Array(orderBuffer, 0, n));
        fillFeatureRows(
          matrix,
          { now, session, userPriceLevel: userPriceLevel(prices) },
          {
            n,
            keys: rows.keys,
            proposed: rows.proposed,
            scores: rows.scores,
            items: table,
            sourcePos: rows.sourcePos,
          },
          at,
        );
        const grouped = await lease.ranker.score(matrix, n);
        const byRow = new Float32Array(orderBuffer, 4 * n, n);
        for (let i = 0; i < n; i++) byRow[i] = grouped[at[i] as number] as number;
        scores = byRow;
      } finally {
        pool.give(matrix);
        lease.release();
      }
      if (record) {
        rerankSeconds.observe((performance.now() - tr) / 1000);
        rankedFeeds.inc();
      }
    } else {
      lease?.release();
      scores = Float64Array.from({ length: n }, (_, i) => 1 / (1 + i));
      if (record) unrankedFeeds.inc();
    }
    const order = descendingOrder(scores, n, new Uint32Array(orderBuffer, 8 * n, n));
    const rested =
      impressions.size === 0
        ? order
        : demoteFatigued(
            order,
            (i) => rows.ids[i] as string,
            impressions,
            config.serving.fatigueImpressions,
            session?.recent ?? [],
          );
    const categoryOf = (i: number): number | null => {
      const k = rows.keys[i] as number;
      return table.known[k] === 1 ? (table.category[k] as number) : null;
    };
    const top = diversify(
      rested,
      categoryOf,
      config.serving.maxPerCategory,
      DIVERSITY_TOP,
      Math.max(0, limit),
    );
    const feedItems: FeedItem[] = top.map((i) => ({
      itemId: rows.ids[i] as string,
      score: scores[i] as number,
      source: shownSource(rows, i),
      categoryL1: categoryName(table, categoryOf(i)),
    }));

    const latencyMs = performance.now() - t0;
    if (record) buildSeconds.observe(latencyMs / 1000);
    const feed: Feed = {
      requestId: randomUUID(),
      userId,
      ts: now,
      items: feedItems,
      modelVersion: lease?.version ?? NO_MODEL_VERSION,
      latencyMs,
    };
    // 5. Off the request path.
    if (!record) return feed;
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

  /**
   * A user's batch candidates from their raw value, kept for the next request of this user in
   * this version (`config.serving.userCache` users, oldest out first): a version's candidate
   * lists never change, and decoding and numbering 200 ids was a tenth of a feed's JavaScript.
   * The ids kept are the table's own strings, not copies.
   */
  async function batchOf(
    st: VersionState,
    userId: string,
    record: boolean,
    raw: string | null | Promise<string | null>,
  ): Promise<ScoredList> {
    const decoded = decodeScored(await raw);
    const { table } = st;
    if (userCacheSize === 0 || table.version === null) return decoded;
    const keys = table.keysOf(decoded);
    const list: ScoredList = {
      ids: Array.from(keys, (k) => table.ids[k] as string),
      scores: decoded.scores,
    };
    table.setKeys(list, keys);
    st.users.delete(userId);
    st.users.set(userId, list);
    if (st.users.size > userCacheSize) st.users.delete(st.users.keys().next().value as string);
    if (record) userCacheMisses.inc();
    return list;
  }

  /**
   * Co-visitation neighbours of each item (items without any are absent). Lists belong to a batch
   * version and never change within it, so they are kept in the version's table (the newest
   * NEIGHBOUR_CACHE_LISTS, and the absence of a list too); misses take one round trip.
   */
  async function neighboursOf(
    itemIds: readonly string[],
    st: VersionState,
  ): Promise<Map<string, ScoredList>> {
    const out = new Map<string, ScoredList>();
    if (itemIds.length === 0) return out;
    const { table } = st;
    const version = table.version as number;
    let missing: string[] | null = null;
    for (const id of itemIds) {
      const hit = table.neighbours[table.intern(id)];
      if (hit === undefined) (missing ??= []).push(id);
      else if (hit !== null) out.set(id, hit);
    }
    if (missing === null) return out;
    // GETs (in one write) rather than one MGET: the keys live in different cluster slots.
    const values = await Promise.all(missing.map((id) => redis.get(BATCH.neighbours(id, version))));
    missing.forEach((id, i) => {
      const list = decodeScored(values[i] ?? null);
      const k = table.intern(id);
      if (table.neighbours[k] === undefined) {
        table.neighbours[k] = list.ids.length > 0 ? list : null;
        st.neighbourKeys.push(k);
        if (st.neighbourKeys.length - st.neighbourHead > NEIGHBOUR_CACHE_LISTS) {
          table.neighbours[st.neighbourKeys[st.neighbourHead++] as number] = undefined;
          if (st.neighbourHead > NEIGHBOUR_CACHE_LISTS) {
            st.neighbourKeys.splice(0, st.neighbourHead);
            st.neighbourHead = 0;
          }
        }
      }
      if (list.ids.length > 0) out.set(id, list);
    });
    return out;
  }

  // Warm-up: once a model is loaded, WARMUP_FEEDS feeds for users who have live features (or
  // made-up new users when there are none) are built and thrown away before /readyz turns green,
  // so the first real requests find the code compiled and the shared caches (catalog,
  // neighbours, popularity, trending) filled. Measured at 500 feeds/s right after /readyz: p99
  // of the first second 300 ms without, 24 ms with (about 1.4 s of warm-up).
  let warmed = false;
  const stopWarmUp = new AbortController();
  const warmUp = async (): Promise<void> => {
    while (!stopWarmUp.signal.aborted && models.version() === null) await sleep(100);
    const users: string[] = [];
    let cursor = '0';
    for (let scans = 0; scans < 20 && users.length < WARMUP_USERS; scans++) {
      const [next, keys] = await redis.scan(cursor, 'MATCH', userFeaturesKey('*'), 'COUNT', 1000);
      for (const key of keys) {
        const id = FEATURES_KEY.exec(key)?.[1];
        if (id !== undefined && users.length < WARMUP_USERS) users.push(id);
      }
      cursor = next;
      if (cursor === '0') break;
    }
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < WARMUP_FEEDS && !stopWarmUp.signal.aborted) {
          const i = next++;
          await build(users[i % users.length] ?? `recsys-warm-up-${i}`, 20, false);
        }
      }),
    );
    warmed = true;
    log.info(
      { feeds: WARMUP_FEEDS, users: users.length, ms: Math.round(performance.now() - t0) },
      'warmed up',
    );
  };
  void (async () => {
    while (!warmed && !stopWarmUp.signal.aborted) {
      try {
        await warmUp();
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'warm-up failed; trying again');
        await sleep(1000);
      }
    }
  })();

  return {
    getFeed: (userId, limit) => build(userId, limit, true),
    readiness: () =>
      checkHealth(
        {
          redis: () => redisHealth(redis, config.healthTimeoutMs),
          model: () => {
            if (models.version() === null) throw new Error('no model loaded');
          },
          kafka: () => served.check(),
          warm: () => {
            if (!warmed) throw new Error('warming up (no model yet, or building warm-up feeds)');
          },
        },
        config.healthTimeoutMs,
      ),
    modelVersion: () => models.version(),
    itemsChanged: (itemIds) => state?.table.forgetFacts(itemIds),
    async close() {
      stopWarmUp.abort();
      await models.close();
      await served.close();
      if (ownRedis) redis.disconnect();
    },
  };
}
