/**
 * The lake ETL: DuckDB SQL over the events topic's Parquet files, writing the tables the rest of
 * the batch reads as Parquet under `<config.batch.dir>/etl/` (each rerun overwrites them).
 *
 * Steps:
 *   1. Read `topic=<events>/*\/*\/*.parquet` (Hive partitions), keep one row per eventId (the
 *      idempotency key: a replay or a rewritten lake file may hold an event twice).
 *   2. Sessions: the client's sessionId when sent; otherwise a new session after a 30-minute
 *      gap (`config.features.sessionGapMs`), as the stream's feature consumer derives them.
 *   3. Join the catalog (category per item; 'unknown' for items it lacks) and the weight of each
 *      event type (`TYPE_WEIGHTS`, shared with the stream so both agree).
 *   4. Time split: events at or after `cutoffTs` (the last `validationShare` of the time span)
 *      are validation, the rest train. A time cut, not a random one: candidates and models see
 *      only the past of what they are evaluated on.
 *   5. Tables: `events` (clean, sessionised, split), `interactions_train` / `interactions_valid`
 *      (weighted implicit feedback per user and item), `item_stats` (train: counts per type,
 *      distinct users, last seen, time-decayed popularity with overall and per-category rank),
 *      `items` (the catalog used).
 *
 * The SQL runs unchanged on DuckDB (default) or Spark (`RECSYS_BATCH_ENGINE`); it keeps to the
 * dialect both accept (`sql-engine.ts`): window functions, CASE, GROUP BY, `count(DISTINCT)`,
 * `unix_millis`; inputs and outputs go through the engine.
 *
 * @example
 *   const etl = await runEtl(config, log);
 *   etl.paths.trainInteractions; // '<batch>/etl/interactions_train.parquet'
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Config, Logger } from '../core/index.js';
import { EVENT_TYPES } from '../schemas/index.js';
import { lakeGlob } from '../stream/lake-layout.js';
import { TYPE_WEIGHTS } from '../store/session-features.js';
import { withSqlEngine, type SqlEngineOptions } from './open-engine.js';
import { scalar, type SqlEngine } from './sql-engine.js';

export interface EtlOptions extends SqlEngineOptions {
  /** Lake root. @default config.lake.dir */
  lakeDir?: string;
  /** Output root; tables go to `<dir>/etl`. @default config.batch.dir */
  batchDir?: string;
  /** Catalog JSON Lines. @default `<batchDir>/catalog.jsonl` when it exists (else no categories) */
  catalogPath?: string;
  /** Share of the time span (the latest part) held out for validation. @default 0.1 */
  validationShare?: number;
  /** Half-life of the popularity decay, ms. @default 3 days */
  popularityHalfLifeMs?: number;
}

export interface EtlPaths {
  events: string;
  trainInteractions: string;
  validInteractions: string;
  itemStats: string;
  items: string;
}

export interface EtlResult {
  dir: string;
  paths: EtlPaths;
  /** Train events are before this time, validation events at or after it (epoch ms). */
  cutoffTs: number;
  minTs: number;
  maxTs: number;
  counts: {
    /** Rows read from the lake. */
    raw: number;
    /** Distinct events (raw - duplicates). */
    events: number;
    duplicates: number;
    users: number;
    items: number;
    sessions: number;
    trainEvents: number;
    validEvents: number;
    trainInteractions: number;
    validInteractions: number;
  };
  durationMs: number;
}

/** `CASE type WHEN 'view' THEN 1 ... END` from the stream's weights. */
export function typeWeightSql(column = 'type'): string {
  const whens = EVENT_TYPES.map((t) => `WHEN '${t}' THEN ${TYPE_WEIGHTS[t]}`).join(' ');
  return `CASE ${column} ${whens} ELSE 0 END`;
}

/** The lake columns the ETL reads (Spark reads them by this schema, not by inference). */
const LAKE_COLUMNS = {
  eventId: 'STRING',
  userId: 'STRING',
  sessionId: 'STRING',
  itemId: 'STRING',
  type: 'STRING',
  ts: 'TIMESTAMP',
  receivedAt: 'TIMESTAMP',
} as const;

/** The catalog's columns, as `catalog.ts` writes them. */
const CATALOG_COLUMNS = {
  itemId: 'STRING',
  categoryL1: 'STRING',
  categoryL2: 'STRING',
  price: 'DOUBLE',
  isAvailable: 'BOOLEAN',
  createdAt: 'BIGINT',
} as const;

/**
 * Runs the ETL; see the module doc for the steps and tables.
 *
 * @example
 *   const etl = await runEtl(config, log, { validationShare: 0.1 });
 *   log.info(etl.counts, 'etl done');
 */
export async function runEtl(
  config: Readonly<Config>,
  log: Logger,
  options: EtlOptions = {},
): Promise<EtlResult> {
  const t0 = performance.now();
  const lakeDir = resolve(options.lakeDir ?? config.lake.dir);
  const batchDir = resolve(options.batchDir ?? config.batch.dir);
  const dir = join(batchDir, 'etl');
  await mkdir(dir, { recursive: true });
  const catalogPath = options.catalogPath ?? join(batchDir, 'catalog.jsonl');
  const validationShare = options.validationShare ?? 0.1;
  const halfLifeMs = options.popularityHalfLifeMs ?? 3 * 86_400_000;
  const gapMs = config.features.sessionGapMs;
  const paths: EtlPaths = {
    events: join(dir, 'events.parquet'),
    trainInteractions: join(dir, 'interactions_train.parquet'),
    validInteractions: join(dir, 'interactions_valid.parquet'),
    itemStats: join(dir, 'item_stats.parquet'),
    items: join(dir, 'items.parquet'),
  };
  return withSqlEngine(config, log, options, async (db) => {
    const glob = lakeGlob(lakeDir, config.kafka.topics.events);
    await db.readParquet('lake', glob, LAKE_COLUMNS);
    await db.createTable(
      'raw',
      `SELECT eventId, userId, sessionId, itemId, type,
         unix_millis(ts) AS ts_ms, unix_millis(receivedAt) AS received_ms
       FROM lake`,
    );
    const rawCount = await scalar(db, 'SELECT count(*) FROM raw');
    if (rawCount === 0) throw new Error(`no events in the lake at ${glob}`);

    await loadCatalog(db, catalogPath, log);

    // 1-3. Dedupe (the first copy of each eventId by receive time), sessionise, weigh. A row
    // starts a session when it is the user's first, when the client's sessionId changes, or (no
    // client id) after the inactivity gap; the running sum of those starts numbers the sessions
    // per user.
    await db.createTable(
      'ev_all',
      `
      WITH dedup AS (
        SELECT * FROM (
          SELECT *, row_number() OVER (PARTITION BY eventId ORDER BY received_ms, ts_ms) AS copy_no
          FROM raw) d
        WHERE copy_no = 1
      ), ordered AS (
        SELECT *,
          lag(ts_ms) OVER (PARTITION BY userId ORDER BY ts_ms, eventId) AS prev_ts,
          lag(sessionId) OVER (PARTITION BY userId ORDER BY ts_ms, eventId) AS prev_sid
        FROM dedup
      ), starts AS (
        SELECT *,
          CASE WHEN prev_ts IS NULL THEN 1
               WHEN sessionId IS NOT NULL AND sessionId IS DISTINCT FROM prev_sid THEN 1
               WHEN sessionId IS NULL AND (prev_sid IS NOT NULL OR ts_ms - prev_ts > ${gapMs}) THEN 1
               ELSE 0 END AS is_start
        FROM ordered
      )
      SELECT s.eventId, s.userId, s.itemId, s.type, s.ts_ms, s.received_ms,
        s.userId || '#' || CAST(sum(s.is_start) OVER (
          PARTITION BY s.userId ORDER BY s.ts_ms, s.eventId ROWS UNBOUNDED PRECEDING) AS STRING) AS session_key,
        ${typeWeightSql('s.type')} AS weight,
        coalesce(i.categoryL1, 'unknown') AS categoryL1
      FROM starts s LEFT JOIN items i ON i.itemId = s.itemId`,
    );

    // 4. Time split.
    const [minRaw, maxRaw] = (await db.rows('SELECT min(ts_ms), max(ts_ms) FROM ev_all'))[0] ?? [];
    const minTs = Number(minRaw);
    const maxTs = Number(maxRaw);
    const cutoffTs = Math.floor(maxTs - (maxTs - minTs) * validationShare);
    await db.createView(
      'ev',
      `SELECT *, CASE WHEN ts_ms < ${cutoffTs} THEN 'train' ELSE 'valid' END AS split FROM ev_all`,
    );
    await db.writeParquet('SELECT * FROM ev', paths.events);

    await writeInteractions(db, paths, cutoffTs, halfLifeMs);
    await db.writeParquet('SELECT * FROM items', paths.items);

    const n = (
      (
        await db.rows(`
      SELECT count(*), count(DISTINCT userId), count(DISTINCT itemId), count(DISTINCT session_key),
        sum(CASE WHEN split = 'train' THEN 1 ELSE 0 END), sum(CASE WHEN split = 'valid' THEN 1 ELSE 0 END),
        (SELECT count(*) FROM out_train), (SELECT count(*) FROM out_valid)
      FROM ev`)
      )[0] ?? []
    ).map((v) => Number(v ?? 0));
    const result: EtlResult = {
      dir,
      paths,
      cutoffTs,
      minTs,
      maxTs,
      counts: {
        raw: rawCount,
        events: n[0] as number,
        duplicates: rawCount - (n[0] as number),
        users: n[1] as number,
        items: n[2] as number,
        sessions: n[3] as number,
        trainEvents: n[4] as number,
        validEvents: n[5] as number,
        trainInteractions: n[6] as number,
        validInteractions: n[7] as number,
      },
      durationMs: performance.now() - t0,
    };
    log.info(
      { engine: db.name, ...result.counts, cutoffTs, durationMs: Math.round(result.durationMs) },
      'etl done',
    );
    return result;
  });
}

/**
 * The catalog into table `items` (one row per itemId; JSON Lines as catalog.ts writes them). Of
 * several lines for one item the newest `createdAt` wins (then the smallest values: a stable
 * choice on both engines).
 */
async function loadCatalog(db: SqlEngine, catalogPath: string, log: Logger): Promise<void> {
  const columns = Object.keys(CATALOG_COLUMNS).join(', ');
  if (existsSync(catalogPath)) {
    await db.readJsonLines('catalog', catalogPath, CATALOG_COLUMNS);
    await db.createTable(
      'items',
      `SELECT ${columns} FROM (
         SELECT *, row_number() OVER (PARTITION BY itemId
           ORDER BY createdAt DESC, categoryL1, categoryL2, price, isAvailable) AS copy_no
         FROM catalog) c
       WHERE copy_no = 1`,
    );
  } else {
    log.warn({ catalogPath }, 'no catalog file: every item is in category "unknown"');
    const nulls = Object.entries(CATALOG_COLUMNS).map(([c, t]) => `CAST(NULL AS ${t}) AS ${c}`);
    await db.createTable('items', `SELECT ${nulls.join(', ')} WHERE 1 = 0`);
  }
}

/**
 * Interactions per (user, item) of each split, and item statistics over train: popularity is
 * the sum of weights decayed to the cut-off (weight * 2^(-(cutoff - ts) / halfLife)).
 */
async function writeInteractions(
  db: SqlEngine,
  paths: EtlPaths,
  cutoffTs: number,
  halfLifeMs: number,
): Promise<void> {
  const counts = EVENT_TYPES.map(
    (t) => `sum(CASE WHEN type = '${t}' THEN 1 ELSE 0 END) AS n_${t}`,
  ).join(', ');
  for (const [split, path] of [
    ['train', paths.trainInteractions],
    ['valid', paths.validInteractions],
  ] as const) {
    await db.writeParquet(
      `SELECT userId, itemId, any_value(categoryL1) AS categoryL1,
         sum(weight) AS weight, count(*) AS events, ${counts},
         min(ts_ms) AS first_ts, max(ts_ms) AS last_ts
       FROM ev WHERE split = '${split}'
       GROUP BY userId, itemId`,
      path,
    );
    // The file as written (for the counts).
    await db.readParquet(`out_${split}`, path);
  }

  await db.writeParquet(
    `
      WITH s AS (
        SELECT itemId, any_value(categoryL1) AS categoryL1, count(*) AS events, ${counts},
          count(DISTINCT userId) AS users, sum(weight) AS weight, max(ts_ms) AS last_ts,
          sum(weight * pow(2, -(${cutoffTs} - ts_ms) / ${halfLifeMs})) AS popularity
        FROM ev WHERE split = 'train'
        GROUP BY itemId
      )
      SELECT *,
        row_number() OVER (ORDER BY popularity DESC, itemId) AS pop_rank,
        row_number() OVER (PARTITION BY categoryL1 ORDER BY popularity DESC, itemId) AS pop_rank_in_category
      FROM s`,
    paths.itemStats,
  );
}
