/**
 * Candidate generation over the ETL's TRAIN data only (validation events never feed it, so an
 * evaluation on them is honest). The same SQL runs on DuckDB or Spark (`sql-engine.ts`).
 *
 * Steps:
 *   1. Session items: one row per (session, item) with its first touch time, its strongest
 *      event weight and its position in the session.
 *   2. Co-visitation: every pair of distinct items at most `windowPositions` apart in a session
 *      adds `max(w_a, w_b) * 2^(-|dt| / pairHalfLifeMs) * 2^(-(cutoff - t) / recencyHalfLifeMs)`:
 *      pairs closer in time and more recent count more, strong interactions more than glances.
 *      Symmetric; per item the top `config.batch.neighboursPerItem` are kept, scores scaled so
 *      each item's best neighbour has 1.
 *   3. Home-feed candidates per user, from two sources:
 *      - `covisit`: the user's `historyItems` strongest items (weight decayed to the cutoff; 10 took half the time of 20 at 1M events),
 *        each spreading its strength to its neighbours; summed per candidate;
 *      - `category`: the user's `topCategories` categories by decayed weight, each offering its
 *        most popular items, scored share-of-taste * popularity relative to the category's top;
 *      each source scaled to [0, 1] per user (category scaled by `categoryWeight`), the better
 *      source of an item kept, then the top `config.batch.candidatesPerUser`.
 *   4. Popularity for cold start: the top `popularK` items overall and per category (from
 *      `item_stats`, time-decayed).
 *
 * Seen items stay candidates (users re-view and re-buy); the reranker judges them.
 *
 * @example
 *   const etl = await runEtl(config, log);
 *   const cands = await buildCandidates(config, log, etl);
 *   cands.paths.neighbours; // '<batch>/candidates/neighbours.parquet'
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config, Logger } from '../core/index.js';
import type { EtlResult } from './etl.js';
import { withSqlEngine, type SqlEngineOptions } from './open-engine.js';
import { scalar } from './sql-engine.js';

export interface CandidateOptions extends SqlEngineOptions {
  /** Output root; tables go to `<dir>/candidates`. @default config.batch.dir */
  batchDir?: string;
  /** Most positions apart two items of a session may be to count as a pair. @default 5 */
  windowPositions?: number;
  /** Half-life of a pair's weight in the time between its two touches, ms. @default 10 min */
  pairHalfLifeMs?: number;
  /** Half-life of a pair's weight in its age at the cutoff, ms. @default 7 days */
  recencyHalfLifeMs?: number;
  /** A user's strongest items whose neighbours become candidates. @default 10 */
  historyItems?: number;
  /** A user's categories whose popular items become candidates. @default 3 */
  topCategories?: number;
  /** Scale of category candidates against co-visitation ones (both in [0, 1]). @default 0.5 */
  categoryWeight?: number;
  /** Popular items kept overall and per category. @default config.batch.candidatesPerUser */
  popularK?: number;
}

export interface CandidatePaths {
  /** itemId, neighbourId, score (best = 1), rank (1 = best) */
  neighbours: string;
  /** userId, itemId, score, source ('covisit' | 'category'), rank */
  users: string;
  /** category (NULL = overall), itemId, score, rank */
  popular: string;
  /** The ETL's item statistics (itemId, categoryL1, popularity, ...): every item's popularity. */
  itemStats: string;
  /** itemId, neighbourId, score (EASE weight), rank: written by `batch/ease.ts`, when it ran. */
  ease?: string;
}

export interface CandidateResult {
  dir: string;
  paths: CandidatePaths;
  counts: {
    neighbours: number;
    itemsWithNeighbours: number;
    userCandidates: number;
    users: number;
    popular: number;
  };
  durationMs: number;
}

/**
 * Builds item neighbours, per-user candidates and popularity lists from an ETL result.
 *
 * @example
 *   const cands = await buildCandidates(config, log, etl, { windowPositions: 5 });
 *   await publishCandidates(config, redis, log, cands);
 */
export async function buildCandidates(
  config: Readonly<Config>,
  log: Logger,
  etl: Pick<EtlResult, 'paths' | 'cutoffTs'>,
  options: CandidateOptions = {},
): Promise<CandidateResult> {
  const t0 = performance.now();
  const dir = join(options.batchDir ?? join(etl.paths.events, '..', '..'), 'candidates');
  await mkdir(dir, { recursive: true });
  const window = options.windowPositions ?? 5;
  const pairHalfLife = options.pairHalfLifeMs ?? 600_000;
  const recencyHalfLife = options.recencyHalfLifeMs ?? 7 * 86_400_000;
  const history = options.historyItems ?? 10;
  const topCats = options.topCategories ?? 3;
  const catWeight = options.categoryWeight ?? 0.5;
  const perUser = config.batch.candidatesPerUser;
  const perItem = config.batch.neighboursPerItem;
  // Each of the top categories offers this many items: together about one list's worth.
  const categoryItems = Math.ceil(perUser / Math.max(1, topCats - 1));
  const popularK = options.popularK ?? perUser;
  const cutoff = etl.cutoffTs;
  const paths: CandidatePaths = {
    neighbours: join(dir, 'neighbours.parquet'),
    users: join(dir, 'user_candidates.parquet'),
    popular: join(dir, 'popular.parquet'),
    itemStats: etl.paths.itemStats,
  };
  return withSqlEngine(config, log, options, async (db) => {
    const steps: Record<string, number> = {};
    const timed = async (name: string, fn: () => Promise<void>): Promise<void> => {
      const t = performance.now();
      await fn();
      steps[name] = Math.round(performance.now() - t);
    };
    const decay = (ts: string, halfLife: number): string =>
      `pow(2, -(${cutoff} - ${ts}) / ${halfLife})`;
    await db.readParquet('etl_events', etl.paths.events);
    await db.readParquet('etl_inter', etl.paths.trainInteractions);
    await db.readParquet('etl_stats', etl.paths.itemStats);
    // 1. Session items (train only).
    await timed('si', () =>
      db.createTable(
        'si',
        `
      SELECT session_key, itemId, ts, w,
        row_number() OVER (PARTITION BY session_key ORDER BY ts, itemId) AS pos
      FROM (
        SELECT session_key, itemId, min(ts_ms) AS ts, max(weight) AS w
        FROM etl_events
        WHERE split = 'train'
        GROUP BY session_key, itemId) t`,
      ),
    );

    // 2. Co-visitation. The join is on the session (equi-join) with the position window as a
    // filter; the sum is symmetric because both orders of a pair are joined.
    await timed('nb', () =>
      db.createTable(
        'nb',
        `
      WITH pairs AS (
        SELECT a.itemId AS itemId, b.itemId AS neighbourId,
          sum(greatest(a.w, b.w) * pow(2, -abs(b.ts - a.ts) / ${pairHalfLife})
              * ${decay('greatest(a.ts, b.ts)', recencyHalfLife)}) AS raw
        FROM si a JOIN si b ON a.session_key = b.session_key
        WHERE a.itemId <> b.itemId AND b.pos BETWEEN a.pos - ${window} AND a.pos + ${window}
        GROUP BY a.itemId, b.itemId
      ), ranked AS (
        SELECT *, row_number() OVER (PARTITION BY itemId ORDER BY raw DESC, neighbourId) AS rank,
          max(raw) OVER (PARTITION BY itemId) AS best
        FROM pairs
      )
      SELECT itemId, neighbourId, raw / best AS score, rank FROM ranked WHERE rank <= ${perItem}`,
      ),
    );
    await timed(paths.neighbours, () => db.writeParquet('SELECT * FROM nb', paths.neighbours));

    // 3. Per-user candidates.
    await timed('inter', () =>
      db.createTable(
        'inter',
        `SELECT userId, itemId, categoryL1, weight * ${decay('last_ts', recencyHalfLife)} AS strength
         FROM etl_inter`,
      ),
    );
    await timed('stats', () =>
      db.createTable(
        'stats',
        `SELECT itemId, categoryL1, popularity, pop_rank, pop_rank_in_category,
           popularity / max(popularity) OVER (PARTITION BY categoryL1) AS pop_in_cat
         FROM etl_stats`,
      ),
    );
    await timed(paths.users, () =>
      db.writeParquet(
        userCandidatesSql({ history, topCats, categoryItems, catWeight, perUser }),
        paths.users,
      ),
    );

    // 4. Popularity, overall (category NULL) and per category.
    await timed(paths.popular, () =>
      db.writeParquet(
        `
        SELECT CAST(NULL AS STRING) AS category, itemId, popularity AS score, pop_rank AS rank
        FROM stats WHERE pop_rank <= ${popularK}
        UNION ALL
        SELECT categoryL1 AS category, itemId, popularity AS score, pop_rank_in_category AS rank
        FROM stats WHERE pop_rank_in_category <= ${popularK}`,
        paths.popular,
      ),
    );

    await db.readParquet('out_users', paths.users);
    await db.readParquet('out_popular', paths.popular);
    const result: CandidateResult = {
      dir,
      paths,
      counts: {
        neighbours: await scalar(db, 'SELECT count(*) FROM nb'),
        itemsWithNeighbours: await scalar(db, 'SELECT count(DISTINCT itemId) FROM nb'),
        userCandidates: await scalar(db, 'SELECT count(*) FROM out_users'),
        users: await scalar(db, 'SELECT count(DISTINCT userId) FROM out_users'),
        popular: await scalar(db, 'SELECT count(*) FROM out_popular'),
      },
      durationMs: performance.now() - t0,
    };
    log.info(
      { engine: db.name, ...result.counts, steps, durationMs: Math.round(result.durationMs) },
      'candidates built',
    );
    return result;
  });
}

/**
 * Per-user candidates: co-visitation neighbours of the user's strongest `history` items, and
 * the popular items of the user's `topCats` categories (weighted `catWeight`), the better
 * source per item, the best `perUser` per user (a query over the tables `inter`, `nb`, `stats`).
 */
function userCandidatesSql(p: {
  history: number;
  topCats: number;
  categoryItems: number;
  catWeight: number;
  perUser: number;
}): string {
  const { history, topCats, categoryItems, catWeight, perUser } = p;
  return `
        WITH hist AS (
          SELECT * FROM (
            SELECT userId, itemId, strength,
              row_number() OVER (PARTITION BY userId ORDER BY strength DESC, itemId) AS r
            FROM inter) h
          WHERE r <= ${history}
        ), covisit AS (
          SELECT h.userId, n.neighbourId AS itemId, sum(h.strength * n.score) AS raw
          FROM hist h JOIN nb n ON n.itemId = h.itemId
          GROUP BY h.userId, n.neighbourId
        ), cats AS (
          SELECT * FROM (
            SELECT userId, categoryL1, share,
              row_number() OVER (PARTITION BY userId ORDER BY share DESC, categoryL1) AS r
            FROM (
              SELECT userId, categoryL1, sum(strength) / sum(sum(strength)) OVER (PARTITION BY userId) AS share
              FROM inter GROUP BY userId, categoryL1) s) c
          WHERE r <= ${topCats}
        ), category AS (
          SELECT c.userId, s.itemId, c.share * s.pop_in_cat AS raw
          FROM cats c JOIN stats s ON s.categoryL1 = c.categoryL1 AND s.pop_rank_in_category <= ${categoryItems}
        ), scored AS (
          SELECT userId, itemId, raw / max(raw) OVER (PARTITION BY userId) AS score, 'covisit' AS source
          FROM covisit
          UNION ALL
          SELECT userId, itemId, ${catWeight} * raw / max(raw) OVER (PARTITION BY userId) AS score,
            'category' AS source
          FROM category
        ), best AS (
          -- The better source of an item.
          SELECT userId, itemId, max(score) AS score, max_by(source, score) AS source
          FROM scored GROUP BY userId, itemId
        )
        SELECT userId, itemId, score, source, rank FROM (
          SELECT *, row_number() OVER (PARTITION BY userId ORDER BY score DESC, itemId) AS rank
          FROM best) r
        WHERE rank <= ${perUser}`;
}
