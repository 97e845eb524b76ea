/**
 * Publishes a candidate build (Parquet files of `buildCandidates`) to Redis as a new version of
 * the {@link CandidateStore} and makes it live. DuckDB aggregates each list into the store's
 * codec (`id,score[,src] ...`, best first) and streams the rows into the store's writer.
 *
 * @example
 *   const { version, retired } = await publishCandidates(config, redis, log, cands);
 *   await new CandidateStore(redis).rollback(log); // back to the previous version
 */
import type { RedisClient } from '../store/redis.js';
import type { Config, Logger } from '../core/index.js';
import { CandidateStore, SOURCE_CODES, type VersionWriter } from '../store/candidates.js';
import type { CandidateResult } from './candidates.js';
import { openBatchDb, sqlString } from './duck.js';

export interface PublishOptions {
  /** Keys per pipeline (round trip). @default 2000 */
  chunkKeys?: number;
  /** TTL given to keys of retired versions, seconds; 0 deletes them at once. @default 300 */
  retireGraceSec?: number;
  /** Versions kept (the live one included). @default config.batch.keepVersions */
  keepVersions?: number;
  /** More fields of the version's meta hash (the blend's weights, `serving/blend.ts`). */
  meta?: Readonly<Record<string, number>>;
}

export interface PublishResult {
  version: number;
  previous: number | null;
  keys: { users: number; items: number; ease: number; popular: number; itemPopularity: number };
  /** Versions whose keys were given the grace TTL (or deleted). */
  retired: number[];
  durationMs: number;
}

/**
 * Writes a candidate build to Redis as a new version and makes it live.
 *
 * @example
 *   const cands = await buildCandidates(config, log, etl);
 *   const { version, retired } = await publishCandidates(config, redis, log, cands);
 */
export async function publishCandidates(
  config: Readonly<Config>,
  redis: RedisClient,
  log: Logger,
  candidates: Pick<CandidateResult, 'paths'>,
  options: PublishOptions = {},
): Promise<PublishResult> {
  const t0 = performance.now();
  const store = new CandidateStore(redis);
  const version = await store.beginVersion();
  const writer = store.writer(version, options.chunkKeys ?? 2000);
  const p = candidates.paths;
  const srcCase = `CASE source ${Object.entries(SOURCE_CODES)
    .map(([name, code]) => `WHEN '${name}' THEN '${code}'`)
    .join(' ')} ELSE source END`;
  const db = await openBatchDb();
  const keys = { users: 0, items: 0, ease: 0, popular: 0, itemPopularity: 0 };
  const write = (list: Parameters<VersionWriter['put']>[0], sql: string) =>
    writeLists(db.conn, writer, list, sql);
  try {
    // Scores at 4 decimals: enough to order and mix, and short.
    keys.users = await write(
      'users',
      `SELECT userId, string_agg(itemId || ',' || round(score, 4) || ',' || ${srcCase}, ' ' ORDER BY rank)
       FROM read_parquet(${sqlString(p.users)}) GROUP BY userId`,
    );
    keys.items = await write(
      'neighbours',
      `SELECT itemId, string_agg(neighbourId || ',' || round(score, 4), ' ' ORDER BY rank)
       FROM read_parquet(${sqlString(p.neighbours)}) GROUP BY itemId`,
    );
    if (p.ease !== undefined) {
      keys.ease = await write(
        'ease',
        `SELECT itemId, string_agg(neighbourId || ',' || round(score, 5), ' ' ORDER BY rank)
         FROM read_parquet(${sqlString(p.ease)}) GROUP BY itemId`,
      );
    }
    // The overall list has category NULL: the store's id for it is ''.
    keys.popular = await write(
      'popular',
      `SELECT coalesce(category, ''), string_agg(itemId || ',' || round(score, 4), ' ' ORDER BY rank)
       FROM read_parquet(${sqlString(p.popular)}) GROUP BY category`,
    );
    // Every item's popularity, one list per category (the rank feature reads the candidate's
    // own category's list, so serving has the value training used, not just the top items').
    keys.itemPopularity = await write(
      'itemPopularity',
      `SELECT categoryL1, string_agg(itemId || ',' || round(popularity, 4), ' ' ORDER BY popularity DESC, itemId)
       FROM read_parquet(${sqlString(p.itemStats)}) WHERE categoryL1 IS NOT NULL GROUP BY categoryL1`,
    );
  } finally {
    db.close();
  }
  const { previous, retired } = await store.publish(
    version,
    { ...keys, ...options.meta },
    {
      keepVersions: options.keepVersions ?? config.batch.keepVersions,
      ...(options.retireGraceSec === undefined ? {} : { retireGraceSec: options.retireGraceSec }),
    },
  );
  const result: PublishResult = {
    version,
    previous,
    keys,
    retired,
    durationMs: performance.now() - t0,
  };
  log.info({ ...result, durationMs: Math.round(result.durationMs) }, 'batch output published');
  return result;
}

/** Streams (id, encoded list) rows from DuckDB into the writer; returns the number of lists. */
async function writeLists(
  conn: Awaited<ReturnType<typeof openBatchDb>>['conn'],
  writer: VersionWriter,
  list: Parameters<VersionWriter['put']>[0],
  sql: string,
): Promise<number> {
  const result = await conn.stream(sql);
  let n = 0;
  for await (const rows of result.yieldRowsJs()) {
    for (const row of rows) {
      await writer.put(list, String(row[0]), String(row[1]));
      n++;
    }
  }
  await writer.flush();
  return n;
}
