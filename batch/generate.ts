/**
 * Synthetic interaction data with known structure, for the batch pipeline's tests, benchmarks
 * and demo. Deterministic: the same options (seed included) give the same events, byte for byte.
 *
 * The model, in steps:
 *   1. Categories `c00..` (L1, mildly Zipf-weighted) each with `subcategories` L2 children; items
 *      get a category, a log-normal price, a `createdAt` before the data starts, and a Zipf
 *      popularity weight (exponent `zipfExponent`) from a random rank.
 *   2. Users get a Dirichlet(1)-like taste over `tastesPerUser` favourite categories plus a
 *      little mass (`exploreShare`) over all of them, and a log-normal activity level.
 *   3. Each user's sessions start at sorted random times in the span (`days` before `endTs`), at
 *      least the 30-minute gap after the previous session's last event. A session views a
 *      geometric number of items (mean `viewsPerSession`) seconds to minutes apart; it starts in
 *      a category drawn from the taste and drifts to a fresh draw with `driftProbability` per view.
 *   4. Each view may run down the funnel, as shares of views: click, add_to_cart (after a
 *      click), purchase (after a cart); like independently.
 *   5. Planted structure: `plantedPairs` pairs (X, Y), X moderately popular, Y an unpopular item of
 *      another category; a view of X is followed by a view of Y in the same session with
 *      `complementProbability`. {@link GeneratedData.plantedPairs} lists them, so a test can check
 *      that co-visitation finds them.
 *
 * Output: Parquet in the lake's own layout and columns (see `stream/lake-writer.ts`), named
 * `generated-<seed>-<i>.parquet`, which the lake sink's recovery never touches (its names are
 * `<topic>-<partition>-<first>-<last>.parquet` and `parseFileName` ignores any other), and the item
 * catalog as JSON Lines (what `npm run catalog -- load` reads), optionally loaded into Redis.
 *
 * @example
 *   const data = generateData({ seed: 7, events: 50_000, users: 2_000, items: 1_000 });
 *   await writeGeneratedLake(data, { lakeDir: config.lake.dir, topic: config.kafka.topics.events });
 *   await writeCatalogJsonl(data.catalog, join(config.batch.dir, 'catalog.jsonl'));
 */
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { RedisClient } from '../store/redis.js';
import type { Logger } from '../core/index.js';
import { EVENT_TYPES } from '../schemas/index.js';
import { CatalogStore, type CatalogItem } from '../store/catalog.js';
import { hourDirs } from '../stream/lake-parquet.js';
import { openBatchDb, sqlString } from './duck.js';
import {
  generateData,
  type GeneratedData,
  type GenerateOptions,
  type PlantedPair,
} from './generate-data.js';

export interface LakeTarget {
  lakeDir: string;
  /** The events topic, e.g. `config.kafka.topics.events`. */
  topic: string;
}

/** File-name prefix of generated lake files; lake-layout's `parseFileName` never matches it. */
export function generatedPrefix(seed: number): string {
  return `generated-${seed}-`;
}

/**
 * Writes the events into the lake: `<lake>/topic=<topic>/date=.../hour=HH/generated-<seed>-<i>.parquet`,
 * with the lake sink's columns and types (`kafka_partition`, `kafka_offset` null: not from Kafka).
 * Idempotent per seed: files of an earlier run with the same seed are removed first.
 * Returns the number of files written.
 *
 * How it is fast: the ids go into DuckDB as integers through one appender (5 native calls per
 * row), and DuckDB builds the strings and writes every hour's file in one partitioned COPY.
 */
export async function writeGeneratedLake(data: GeneratedData, target: LakeTarget): Promise<number> {
  const { seed } = data.settings;
  const topicDir = join(target.lakeDir, `topic=${target.topic}`);
  await removeGenerated(topicDir, seed);
  await mkdir(topicDir, { recursive: true });
  const prices = new Float64Array(data.catalog.map((c) => c.price ?? 0));
  const db = await openBatchDb();
  try {
    const conn = db.conn;
    await conn.run(
      'CREATE TEMP TABLE g (n INTEGER, u INTEGER, i INTEGER, t UTINYINT, ts BIGINT, s INTEGER, p SMALLINT)',
    );
    const a = await conn.createAppender('g');
    for (let r = 0; r < data.count; r++) {
      a.appendInteger(r);
      a.appendInteger(data.user[r] as number);
      a.appendInteger(data.item[r] as number);
      a.appendUTinyInt(data.type[r] as number);
      a.appendBigInt(BigInt(data.ts[r] as number));
      a.appendInteger(data.session[r] as number);
      a.appendSmallInt(data.position[r] as number);
      a.endRow();
    }
    a.closeSync();
    await conn.run('CREATE TEMP TABLE price (i INTEGER, price DOUBLE)');
    const pa = await conn.createAppender('price');
    prices.forEach((p, i) => {
      pa.appendInteger(i);
      pa.appendDouble(p);
      pa.endRow();
    });
    pa.closeSync();
    const clientSessions = Array.from(data.clientSession.entries())
      .filter(([, c]) => c === 1)
      .map(([s]) => s);
    await conn.run('CREATE TEMP TABLE cs (s INTEGER PRIMARY KEY)');
    const ca = await conn.createAppender('cs');
    for (const s of clientSessions) {
      ca.appendInteger(s);
      ca.endRow();
    }
    ca.closeSync();
    const types = `['${EVENT_TYPES.join("','")}']`;
    const seedHex = (seed >>> 0).toString(16).padStart(8, '0');
    // Column list and types exactly as stream/lake-writer.ts writes them.
    await conn.run(`
      COPY (
        SELECT
          '${seedHex}-0000-4000-8000-' || lower(lpad(to_hex(g.n), 12, '0')) AS eventId,
          'u' || g.u AS userId,
          CASE WHEN cs.s IS NULL THEN NULL ELSE 's${seed}-' || g.s END AS sessionId,
          'i' || g.i AS itemId,
          ${types}[g.t + 1] AS type,
          make_timestamp(g.ts * 1000)::TIMESTAMPTZ AS ts,
          'home' AS context_page,
          g.p::INTEGER AS context_position,
          NULL::VARCHAR AS context_device,
          CASE WHEN g.t = ${EVENT_TYPES.indexOf('purchase')} THEN price.price ELSE NULL END AS value,
          make_timestamp((g.ts + 40) * 1000)::TIMESTAMPTZ AS receivedAt,
          'mqtt' AS source,
          NULL::INTEGER AS kafka_partition,
          NULL::BIGINT AS kafka_offset,
          strftime(make_timestamp(g.ts * 1000), '%Y-%m-%d') AS date,
          strftime(make_timestamp(g.ts * 1000), '%H') AS hour
        FROM g LEFT JOIN cs ON cs.s = g.s LEFT JOIN price ON price.i = g.i
      ) TO ${sqlString(topicDir)} (
        FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date, hour), OVERWRITE_OR_IGNORE,
        FILENAME_PATTERN '${generatedPrefix(seed)}{i}'
      )`);
  } finally {
    db.close();
  }
  return (await listGenerated(topicDir, seed)).length;
}

async function listGenerated(topicDir: string, seed: number): Promise<string[]> {
  const prefix = generatedPrefix(seed);
  const out: string[] = [];
  for (const hour of await hourDirs(topicDir)) {
    const dir = join(topicDir, hour);
    for (const name of await readdir(dir)) {
      if (name.startsWith(prefix) && name.endsWith('.parquet')) out.push(join(dir, name));
    }
  }
  return out;
}

async function removeGenerated(topicDir: string, seed: number): Promise<void> {
  for (const file of await listGenerated(topicDir, seed)) await rm(file, { force: true });
}

/** Writes catalog items as JSON Lines (what `npm run catalog -- load` and the ETL read). */
export async function writeCatalogJsonl(
  items: readonly CatalogItem[],
  path: string,
): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, items.map((i) => JSON.stringify(i)).join('\n') + '\n');
}

/** Upserts catalog items into Redis (`item:<id>` hashes), as `npm run catalog -- load` does. */
export async function loadCatalog(
  redis: RedisClient,
  items: readonly CatalogItem[],
): Promise<void> {
  await new CatalogStore(redis, { cacheTtlMs: 0, cacheSize: 0 }).upsert(items);
}

export interface GenerateRunOptions extends GenerateOptions, LakeTarget {
  /** Where the catalog JSON Lines go, e.g. `<config.batch.dir>/catalog.jsonl`. */
  catalogPath: string;
  /** When given, the catalog is also loaded into this Redis. */
  redis?: RedisClient;
  log?: Logger;
}

export interface GenerateResult {
  events: number;
  users: number;
  items: number;
  files: number;
  catalogPath: string;
  plantedPairs: PlantedPair[];
  timingsMs: { generate: number; lake: number; catalog: number };
}

/**
 * Generates data and writes it everywhere: lake, catalog file, and (with `redis`) the catalog in Redis.
 *
 * @example
 *   const res = await generate({
 *     seed: 42, events: 1_000_000, lakeDir: config.lake.dir, topic: config.kafka.topics.events,
 *     catalogPath: join(config.batch.dir, 'catalog.jsonl'), redis,
 *   });
 *   res.plantedPairs; // [{ itemId: 'i123', complementId: 'i4567' }, ...]
 */
export async function generate(opts: GenerateRunOptions): Promise<GenerateResult> {
  const t0 = performance.now();
  const data = generateData(opts);
  const t1 = performance.now();
  const files = await writeGeneratedLake(data, opts);
  const t2 = performance.now();
  await writeCatalogJsonl(data.catalog, opts.catalogPath);
  if (opts.redis) await loadCatalog(opts.redis, data.catalog);
  const t3 = performance.now();
  const res: GenerateResult = {
    events: data.count,
    users: data.settings.users,
    items: data.settings.items,
    files,
    catalogPath: opts.catalogPath,
    plantedPairs: data.plantedPairs,
    timingsMs: { generate: t1 - t0, lake: t2 - t1, catalog: t3 - t2 },
  };
  opts.log?.info({ ...res, plantedPairs: res.plantedPairs.length }, 'synthetic data generated');
  return res;
}
