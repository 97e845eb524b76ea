/**
 * Loads a public interaction log given as CSV (RetailRocket, MovieLens ratings, any
 * `user,item,timestamp[,type][,category]` file) into the lake, in the layout and columns the lake
 * sink writes, so the batch reads it like live traffic. With a category column it also yields the
 * item catalog (JSON Lines, what `npm run catalog -- load` reads).
 *
 * Steps (DuckDB does the parsing and writing):
 *   1. Header names: the ones given, else the first known alias present (see {@link ALIASES}).
 *   2. Timestamps: digits are epoch seconds (below 1e11) or ms; anything else ISO 8601.
 *      Rows whose user, item or time do not parse are counted and skipped.
 *   3. Types: synonyms mapped to the five event types (`addtocart` -> add_to_cart,
 *      `transaction` -> purchase, ...); no type column or an unknown value -> view.
 *   4. Ids: characters outside `[A-Za-z0-9_.:@-]` become `_` (the events' id alphabet).
 *   5. eventId = a UUID-shaped md5 of user, item, time and type: loading the same file twice
 *      writes the same ids (and the same file names), identical rows collapse in the ETL.
 *   6. Files: `<lake>/topic=<topic>/date=/hour=/csv-<name>-<i>.parquet` (never matched by the
 *      lake sink's recovery, see `stream/lake-layout.ts`); a reload replaces them.
 *
 * @example
 *   const res = await loadCsv({ file: 'events.csv', lakeDir: config.lake.dir,
 *     topic: config.kafka.topics.events, catalogPath: join(config.batch.dir, 'catalog.jsonl') });
 */
import { mkdir, readdir, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { type Logger, RecsysError } from '../core/index.js';
import { openBatchDb, sqlString } from './duck.js';
import { writeCatalogJsonl } from './generate.js';

export interface CsvColumns {
  user?: string;
  item?: string;
  timestamp?: string;
  type?: string;
  category?: string;
}

/** Header names tried, in order, for each column (compared case-insensitively). */
export const ALIASES: Readonly<Record<keyof CsvColumns, readonly string[]>> = {
  user: ['userid', 'user_id', 'user', 'visitorid', 'visitor_id', 'customer_id', 'uid'],
  item: [
    'itemid',
    'item_id',
    'item',
    'productid',
    'product_id',
    'movieid',
    'movie_id',
    'article_id',
    'iid',
  ],
  timestamp: ['timestamp', 'ts', 'time', 'event_time', 'datetime', 'unix_time', 'date'],
  type: ['type', 'event', 'event_type', 'action', 'behavior', 'behaviour'],
  category: [
    'categoryl1',
    'category',
    'categoryid',
    'category_id',
    'category_code',
    'genre',
    'genres',
  ],
};

/** Lower-cased synonyms of the event types. */
export const TYPE_SYNONYMS: Readonly<Record<string, string>> = {
  view: 'view',
  pv: 'view',
  impression: 'view',
  detail: 'view',
  click: 'click',
  add_to_cart: 'add_to_cart',
  addtocart: 'add_to_cart',
  cart: 'add_to_cart',
  'add-to-cart': 'add_to_cart',
  like: 'like',
  fav: 'like',
  favorite: 'like',
  favourite: 'like',
  rating: 'like',
  purchase: 'purchase',
  buy: 'purchase',
  transaction: 'purchase',
  order: 'purchase',
};

/** The CSV lacks a needed column, or names one its header does not have. */
export class CsvColumnError extends RecsysError {
  constructor(message: string) {
    super('RECSYS_CSV_COLUMNS', message);
  }
}

/** Resolves the header names of each column: given names win, then {@link ALIASES}. */
export function detectColumns(header: readonly string[], given: CsvColumns = {}): CsvColumns {
  const lower = new Map(header.map((h) => [h.trim().toLowerCase(), h.trim()]));
  const out: CsvColumns = {};
  for (const col of Object.keys(ALIASES) as Array<keyof CsvColumns>) {
    const name = given[col];
    if (name !== undefined) {
      const found = lower.get(name.toLowerCase());
      if (!found)
        throw new CsvColumnError(`column "${name}" (${col}) not in header: ${header.join(',')}`);
      out[col] = found;
      continue;
    }
    const alias = ALIASES[col].find((a) => lower.has(a));
    if (alias) out[col] = lower.get(alias) as string;
  }
  for (const col of ['user', 'item', 'timestamp'] as const) {
    if (!out[col]) throw new CsvColumnError(`no ${col} column in header: ${header.join(',')}`);
  }
  return out;
}

/** Epoch ms of a CSV time: epoch seconds (< 1e11), epoch ms, or ISO 8601; NaN when none. */
export function parseTimestamp(raw: string): number {
  const s = raw.trim();
  if (/^\d+(\.\d+)?$/.test(s)) {
    const n = Number(s);
    return Math.round(n < 1e11 ? n * 1000 : n);
  }
  return Date.parse(s);
}

/** The SQL of {@link parseTimestamp} (keep the two the same). */
function timestampSql(col: string): string {
  return `CASE WHEN regexp_full_match(trim(${col}), '\\d+(\\.\\d+)?')
      THEN CAST(round(CASE WHEN CAST(trim(${col}) AS DOUBLE) < 1e11
                          THEN CAST(trim(${col}) AS DOUBLE) * 1000 ELSE CAST(trim(${col}) AS DOUBLE) END) AS BIGINT)
      ELSE epoch_ms(try_cast(trim(${col}) AS TIMESTAMPTZ)) END`;
}

export interface LoadCsvOptions {
  file: string;
  lakeDir: string;
  /** The events topic, e.g. `config.kafka.topics.events`. */
  topic: string;
  columns?: CsvColumns;
  /** Field separator; auto-detected by DuckDB when absent. */
  delimiter?: string;
  /** Where the catalog goes when a category column exists. */
  catalogPath?: string;
  log?: Logger;
}

export interface LoadCsvResult {
  rows: number;
  loaded: number;
  skipped: number;
  files: number;
  items: number;
  columns: CsvColumns;
  catalogPath: string | null;
}

/**
 * Loads one CSV file into the lake (and the catalog, with a category column).
 *
 * @example
 *   await loadCsv({ file: 'ratings.csv', lakeDir, topic, columns: { user: 'userId', item: 'movieId' } });
 */
export async function loadCsv(opts: LoadCsvOptions): Promise<LoadCsvResult> {
  const header = await firstLine(opts.file);
  const delim = opts.delimiter ?? [',', ';', '\t', '|'].find((d) => header.includes(d)) ?? ',';
  const columns = detectColumns(
    header.split(delim).map((h) => h.replace(/^"|"$/g, '')),
    opts.columns,
  );
  const q = (name: string | undefined): string =>
    name ? `"${name.replaceAll('"', '""')}"` : 'NULL';
  const id = (expr: string): string =>
    `regexp_replace(trim(${expr}), '[^A-Za-z0-9_.:@-]', '_', 'g')`;
  const synonyms = Object.entries(TYPE_SYNONYMS)
    .map(([k, v]) => `WHEN '${k}' THEN '${v}'`)
    .join(' ');
  const tag = basename(opts.file)
    .replace(/\.[^.]*$/, '')
    .replace(/[^A-Za-z0-9_]/g, '_');
  const prefix = `csv-${tag}-`;
  const topicDir = join(opts.lakeDir, `topic=${opts.topic}`);
  const db = await openBatchDb();
  try {
    const { conn } = db;
    await conn.run(`
      CREATE TEMP TABLE src AS
      SELECT * FROM read_csv(${sqlString(opts.file)}, header = true, all_varchar = true,
        delim = ${sqlString(delim)})`);
    await conn.run(`
      CREATE TEMP TABLE ev AS
      SELECT ${id(q(columns.user))} AS userId, ${id(q(columns.item))} AS itemId,
        ${timestampSql(q(columns.timestamp))} AS ts_ms,
        coalesce(CASE lower(trim(${q(columns.type)})) ${synonyms} END, 'view') AS type,
        ${columns.category ? `nullif(regexp_replace(trim(${q(columns.category)}), '[\\s{}]', '_', 'g'), '')` : 'NULL'} AS category
      FROM src`);
    const rows = await count(db, 'SELECT count(*) FROM src');
    await conn.run(`DELETE FROM ev WHERE userId IS NULL OR userId = '' OR itemId IS NULL OR itemId = ''
      OR ts_ms IS NULL OR length(userId) > 128 OR length(itemId) > 128`);
    const loaded = await count(db, 'SELECT count(*) FROM ev');
    for (const file of await listPrefixed(topicDir, prefix)) await rm(file, { force: true });
    await mkdir(topicDir, { recursive: true });
    await conn.run(`
      COPY (
        SELECT
          regexp_replace(md5(userId || '|' || itemId || '|' || ts_ms || '|' || type),
            '^(.{8})(.{4})(.{4})(.{4})(.{12})$', '\\1-\\2-\\3-\\4-\\5') AS eventId,
          userId, NULL::VARCHAR AS sessionId, itemId, type,
          make_timestamp(ts_ms * 1000)::TIMESTAMPTZ AS ts,
          NULL::VARCHAR AS context_page, NULL::INTEGER AS context_position, NULL::VARCHAR AS context_device,
          NULL::DOUBLE AS value,
          make_timestamp(ts_ms * 1000)::TIMESTAMPTZ AS receivedAt,
          'http' AS source, NULL::INTEGER AS kafka_partition, NULL::BIGINT AS kafka_offset,
          strftime(make_timestamp(ts_ms * 1000), '%Y-%m-%d') AS date,
          strftime(make_timestamp(ts_ms * 1000), '%H') AS hour
        FROM ev
      ) TO ${sqlString(topicDir)} (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date, hour),
        OVERWRITE_OR_IGNORE, FILENAME_PATTERN '${prefix}{i}')`);
    let items = 0;
    let catalogPath: string | null = null;
    if (columns.category && opts.catalogPath) {
      // An item's most frequent category; createdAt = its first event.
      const r = await conn.runAndReadAll(`
        SELECT itemId, mode(category) AS categoryL1, min(ts_ms) AS createdAt
        FROM ev WHERE category IS NOT NULL GROUP BY itemId ORDER BY itemId`);
      const catalog = r.getRowsJS().map(([itemId, c1, createdAt]) => ({
        itemId: String(itemId),
        categoryL1: String(c1).slice(0, 128),
        categoryL2: null,
        price: null,
        isAvailable: true,
        createdAt: Number(createdAt),
      }));
      await writeCatalogJsonl(catalog, opts.catalogPath);
      items = catalog.length;
      catalogPath = opts.catalogPath;
    }
    const result: LoadCsvResult = {
      rows,
      loaded,
      skipped: rows - loaded,
      files: (await listPrefixed(topicDir, prefix)).length,
      items,
      columns,
      catalogPath,
    };
    opts.log?.info({ file: opts.file, ...result }, 'csv loaded into the lake');
    return result;
  } finally {
    db.close();
  }
}

async function count(db: Awaited<ReturnType<typeof openBatchDb>>, sql: string): Promise<number> {
  const r = await db.conn.runAndReadAll(sql);
  return Number(r.getRowsJS()[0]?.[0] ?? 0);
}

async function firstLine(file: string): Promise<string> {
  const rl = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
  try {
    for await (const line of rl) return line.replace(/^\uFEFF/, '');
  } finally {
    rl.close();
  }
  throw new CsvColumnError(`${file} is empty`);
}

async function listPrefixed(topicDir: string, prefix: string): Promise<string[]> {
  const out: string[] = [];
  const sub = async (dir: string, p: string): Promise<string[]> => {
    try {
      return (await readdir(dir, { withFileTypes: true }))
        .filter((e) => e.isDirectory() && e.name.startsWith(p))
        .map((e) => e.name);
    } catch {
      return [];
    }
  };
  for (const date of await sub(topicDir, 'date=')) {
    for (const hour of await sub(join(topicDir, date), 'hour=')) {
      const dir = join(topicDir, date, hour);
      for (const name of await readdir(dir)) {
        if (name.startsWith(prefix) && name.endsWith('.parquet')) out.push(join(dir, name));
      }
    }
  }
  return out;
}
