/**
 * Publishes batch output to Redis under a new version and switches it in with one pointer
 * update; and the readers serving uses. Key names: `BATCH` in `store/keys.ts`.
 *
 * Publishing, in steps:
 *   1. `INCR batch:seq` gives the new version v (never reused, so a half-written earlier attempt
 *      cannot mix with it).
 *   2. Write every key of v: `{u:<id>}:cand:v<v>` per user, `nb:v<v>:<item>` per item,
 *      `pop:v<v>` and `pop:v<v>:c:<cat>`, `ipop:v<v>:c:<cat>` (every item's popularity, per
 *      category), `batch:v<v>:meta`. Values are compact strings built by
 *      DuckDB (`string_agg`), streamed in chunks and pipelined (one round trip per chunk).
 *   3. One `MULTI`: `SET batch:current v` and `ZADD batch:versions v v`. Readers read the
 *      pointer, then keys of that version: they see the old batch or the new one, never a mix.
 *   4. Retire: versions beyond the newest `config.batch.keepVersions` leave `batch:versions`, and
 *      every key of a version neither kept nor newer than v (older ones, and leftovers of failed
 *      publishes) gets a grace TTL (`retireGraceSec`), so a reader that read the old pointer a
 *      moment ago still finds its keys; 0 deletes at once. Found with one SCAN of the keyspace.
 *
 * Values: candidates `item,score,src item,score,src ...` (src: `n` co-visitation, `c` category),
 * neighbours, popular and item popularity `item,score ...`, best first. About 20 bytes per
 * entry: at 200 per user a user costs some 4 KB, where a sorted set (skiplist beyond 128
 * members) would cost ~4 times that.
 *
 * @example
 *   const { version } = await publishCandidates(config, redis, log, cands);
 *   const feed = await readCandidates(redis, 'u42'); // { version, items: [{ itemId, score, source }] }
 *   await rollback(redis, log); // back to the previous version
 */
import type { Redis } from 'ioredis';
import { type Config, type Logger, RecsysError } from '../core/index.js';
import { BATCH } from '../store/keys.js';
import type { CandidateResult } from './candidates.js';
import { openBatchDb, sqlString } from './duck.js';

/** Publishing failed (a Redis write error); the live version is untouched. */
export class BatchPublishError extends RecsysError {
  readonly version: number;
  constructor(version: number, message: string, cause?: unknown) {
    super('RECSYS_BATCH_PUBLISH_FAILED', `batch v${version}: ${message}`, {
      cause,
      retriable: true,
    });
    this.version = version;
  }
}

/** No earlier version left to roll back to. */
export class BatchRollbackError extends RecsysError {
  constructor(message: string) {
    super('RECSYS_BATCH_NO_ROLLBACK', message);
  }
}

export interface PublishOptions {
  /** Keys per pipeline (round trip). @default 2000 */
  chunkKeys?: number;
  /** TTL given to keys of retired versions, seconds; 0 deletes them at once. @default 300 */
  retireGraceSec?: number;
  /** Versions kept (the live one included). @default config.batch.keepVersions */
  keepVersions?: number;
}

export interface PublishResult {
  version: number;
  previous: number | null;
  keys: { users: number; items: number; popular: number; itemPopularity: number };
  /** Versions whose keys were given the grace TTL (or deleted). */
  retired: number[];
  durationMs: number;
}

const SOURCE_CODES: Readonly<Record<string, string>> = { covisit: 'n', category: 'c' };
const SOURCE_NAMES: Readonly<Record<string, string>> = { n: 'covisit', c: 'category' };

/**
 * Writes a candidate build to Redis as a new version and makes it live.
 *
 * @example
 *   const cands = await buildCandidates(config, log, etl);
 *   const { version, retired } = await publishCandidates(config, redis, log, cands);
 */
export async function publishCandidates(
  config: Readonly<Config>,
  redis: Redis,
  log: Logger,
  candidates: Pick<CandidateResult, 'paths'>,
  options: PublishOptions = {},
): Promise<PublishResult> {
  const t0 = performance.now();
  const chunkKeys = options.chunkKeys ?? 2000;
  const keep = options.keepVersions ?? config.batch.keepVersions;
  const version = await redis.incr(BATCH.sequence);
  const p = candidates.paths;
  const srcCase = `CASE source ${Object.entries(SOURCE_CODES)
    .map(([name, code]) => `WHEN '${name}' THEN '${code}'`)
    .join(' ')} ELSE source END`;
  const db = await openBatchDb();
  const keys = { users: 0, items: 0, popular: 0, itemPopularity: 0 };
  try {
    // Scores at 4 decimals: enough to order and mix, and short.
    keys.users = await writeStrings(
      db.conn,
      redis,
      version,
      `SELECT userId, string_agg(itemId || ',' || round(score, 4) || ',' || ${srcCase}, ' ' ORDER BY rank)
       FROM read_parquet(${sqlString(p.users)}) GROUP BY userId`,
      (id) => BATCH.candidates(id, version),
      chunkKeys,
    );
    keys.items = await writeStrings(
      db.conn,
      redis,
      version,
      `SELECT itemId, string_agg(neighbourId || ',' || round(score, 4), ' ' ORDER BY rank)
       FROM read_parquet(${sqlString(p.neighbours)}) GROUP BY itemId`,
      (id) => BATCH.neighbours(id, version),
      chunkKeys,
    );
    // The overall list has category NULL: coalesce to '' and map back.
    keys.popular = await writeStrings(
      db.conn,
      redis,
      version,
      `SELECT coalesce(category, ''), string_agg(itemId || ',' || round(score, 4), ' ' ORDER BY rank)
       FROM read_parquet(${sqlString(p.popular)}) GROUP BY category`,
      (cat) => BATCH.popular(cat === '' ? null : cat, version),
      chunkKeys,
    );
    // Every item's popularity, one list per category (the rank feature reads the candidate's
    // own category's list, so serving has the value training used, not just the top items').
    keys.itemPopularity = await writeStrings(
      db.conn,
      redis,
      version,
      `SELECT categoryL1, string_agg(itemId || ',' || round(popularity, 4), ' ' ORDER BY popularity DESC, itemId)
       FROM read_parquet(${sqlString(p.itemStats)}) WHERE categoryL1 IS NOT NULL GROUP BY categoryL1`,
      (cat) => BATCH.itemPopularity(cat, version),
      chunkKeys,
    );
  } finally {
    db.close();
  }
  await redis.hset(BATCH.meta(version), {
    createdAt: String(Date.now()),
    users: String(keys.users),
    items: String(keys.items),
    popular: String(keys.popular),
    itemPopularity: String(keys.itemPopularity),
  });

  // 3. The switch: one transaction.
  const previousRaw = await redis.get(BATCH.current);
  const switched = await redis
    .multi()
    .set(BATCH.current, String(version))
    .zadd(BATCH.versions, version, String(version))
    .exec();
  for (const [err] of switched ?? [[new Error('transaction aborted')]]) {
    if (err) throw new BatchPublishError(version, 'pointer not switched', err);
  }

  // 4. Retire.
  const retired = await retire(redis, version, keep, options.retireGraceSec ?? 300);
  const result: PublishResult = {
    version,
    previous: previousRaw === null ? null : Number(previousRaw),
    keys,
    retired,
    durationMs: performance.now() - t0,
  };
  log.info({ ...result, durationMs: Math.round(result.durationMs) }, 'batch output published');
  return result;
}

/** Streams (key id, value) rows from DuckDB into pipelined SETs; returns the number of keys. */
async function writeStrings(
  conn: Awaited<ReturnType<typeof openBatchDb>>['conn'],
  redis: Redis,
  version: number,
  sql: string,
  key: (id: string) => string,
  chunkKeys: number,
): Promise<number> {
  const result = await conn.stream(sql);
  let n = 0;
  let pipeline = redis.pipeline();
  let pending = 0;
  const flush = async (): Promise<void> => {
    if (pending === 0) return;
    const replies = await pipeline.exec();
    for (const [err] of replies ?? []) {
      if (err) throw new BatchPublishError(version, 'write failed', err);
    }
    pipeline = redis.pipeline();
    pending = 0;
  };
  for await (const rows of result.yieldRowsJs()) {
    for (const row of rows) {
      pipeline.set(key(String(row[0])), String(row[1]));
      n++;
      if (++pending >= chunkKeys) await flush();
    }
  }
  await flush();
  return n;
}

/**
 * Keeps the newest `keep` versions of `batch:versions`, and gives every key of any other version
 * not newer than `upTo` a TTL of `graceSec` (0: deletes it). Returns the versions retired.
 */
async function retire(
  redis: Redis,
  upTo: number,
  keep: number,
  graceSec: number,
): Promise<number[]> {
  const kept = new Set((await redis.zrevrange(BATCH.versions, 0, keep - 1)).map(Number));
  await redis.zremrangebyrank(BATCH.versions, 0, -(keep + 1));
  const retired = new Set<number>();
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'COUNT', 5000);
    cursor = next;
    const pipeline = redis.pipeline();
    let n = 0;
    for (const key of found) {
      const v = BATCH.versionOf(key);
      if (v === null || kept.has(v) || v > upTo) continue;
      retired.add(v);
      // NX: a key already expiring keeps its (earlier) deadline.
      if (graceSec > 0) pipeline.expire(key, graceSec, 'NX');
      else pipeline.unlink(key);
      n++;
    }
    if (n > 0) await pipeline.exec();
  } while (cursor !== '0');
  return [...retired].sort((a, b) => a - b);
}

/**
 * Makes the newest kept version older than the live one live again, and retires the live one.
 * Returns both versions. Throws {@link BatchRollbackError} when there is none to go back to.
 *
 * @example
 *   const { from, to } = await rollback(redis, log);
 */
export async function rollback(
  redis: Redis,
  log: Logger,
  options: { retireGraceSec?: number } = {},
): Promise<{ from: number; to: number }> {
  const current = await currentVersion(redis);
  if (current === null) throw new BatchRollbackError('no batch output is live');
  const older = (await redis.zrevrangebyscore(BATCH.versions, `(${current}`, '-inf')).map(Number);
  let to: number | null = null;
  for (const v of older) {
    if ((await redis.exists(BATCH.meta(v))) === 1) {
      to = v;
      break;
    }
  }
  if (to === null) throw new BatchRollbackError(`no version older than v${current} is kept`);
  const res = await redis
    .multi()
    .set(BATCH.current, String(to))
    .zrem(BATCH.versions, String(current))
    .exec();
  for (const [err] of res ?? [[new Error('transaction aborted')]]) if (err) throw err;
  // The rolled-back version is retired like any other dropped version (grace TTL).
  const keepAll = (await redis.zcard(BATCH.versions)) || 1;
  await retire(redis, current, keepAll, options.retireGraceSec ?? 300);
  log.warn({ from: current, to }, 'batch output rolled back');
  return { from: current, to };
}

// ------------------------------------------------------------------------------ readers

export interface ScoredItem {
  itemId: string;
  score: number;
}

export interface Candidate extends ScoredItem {
  /** Generator that proposed it: `covisit` or `category`. */
  source: string;
}

/** The live batch version, or null when none was published. */
export async function currentVersion(redis: Redis): Promise<number | null> {
  const v = await redis.get(BATCH.current);
  return v === null ? null : Number(v);
}

/** Decodes `id,score[,src] ...`. */
function decode(value: string | null): Array<[string, number, string | undefined]> {
  if (!value) return [];
  return value.split(' ').map((entry) => {
    const [id, score, src] = entry.split(',');
    return [id as string, Number(score), src];
  });
}

const POW10 = Array.from({ length: 16 }, (_, i) => 10 ** i);

/**
 * `Number(text.slice(from, to))` without the slice, for plain decimals (`-12.345`, at most 15
 * digits): the digits as one exact integer divided by an exact power of ten is the correctly
 * rounded value, the same double `Number` gives. Anything else goes to `Number`.
 */
function parseDecimal(text: string, from: number, to: number): number {
  let i = from;
  let negative = false;
  if (text.charCodeAt(i) === 45) {
    negative = true;
    i++;
  }
  let digits = 0;
  let mantissa = 0;
  let fraction = -1;
  for (; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      mantissa = mantissa * 10 + (c - 48);
      digits++;
      if (fraction >= 0) fraction++;
    } else if (c === 46 && fraction < 0) fraction = 0;
    else return Number(text.slice(from, to));
  }
  if (digits === 0 || digits > 15) return Number(text.slice(from, to));
  const value = fraction > 0 ? mantissa / (POW10[fraction] as number) : mantissa;
  return negative ? -value : value;
}

/**
 * Decodes `id,score[,src] ...` into parallel arrays (the source is skipped), for readers on a
 * hot path: one scan, no object or array per entry. A missing score reads as NaN, as in
 * {@link readCandidates}.
 *
 * @example
 *   decodeScored('i1,0.9,n i2,0.5,c'); // { ids: ['i1', 'i2'], scores: Float64Array [0.9, 0.5] }
 */
export function decodeScored(value: string | null): { ids: string[]; scores: Float64Array } {
  if (!value) return { ids: [], scores: new Float64Array(0) };
  let n = 1;
  for (let i = value.indexOf(' '); i !== -1; i = value.indexOf(' ', i + 1)) n++;
  const ids: string[] = [];
  const scores = new Float64Array(n);
  let at = 0;
  for (let k = 0; k < n; k++) {
    let end = value.indexOf(' ', at);
    if (end === -1) end = value.length;
    const c1 = value.indexOf(',', at);
    if (c1 === -1 || c1 > end) {
      ids.push(value.slice(at, end));
      scores[k] = Number.NaN;
    } else {
      ids.push(value.slice(at, c1));
      let c2 = value.indexOf(',', c1 + 1);
      if (c2 === -1 || c2 > end) c2 = end;
      scores[k] = parseDecimal(value, c1 + 1, c2);
    }
    at = end + 1;
  }
  return { ids, scores };
}

/**
 * A user's batch candidates of the live version (or of `version`, when the caller already read
 * the pointer for a whole request), best first; empty when the user has none.
 *
 * @example
 *   const { version, items } = await readCandidates(redis, 'u42');
 */
export async function readCandidates(
  redis: Redis,
  userId: string,
  version?: number,
): Promise<{ version: number | null; items: Candidate[] }> {
  const v = version ?? (await currentVersion(redis));
  if (v === null) return { version: null, items: [] };
  const items = decode(await redis.get(BATCH.candidates(userId, v))).map(
    ([itemId, score, src]) => ({
      itemId,
      score,
      source: SOURCE_NAMES[src ?? ''] ?? src ?? 'batch',
    }),
  );
  return { version: v, items };
}

/**
 * Co-visitation neighbours of each item (one pipelined round trip; items without any are
 * absent), best first with the best scored 1.
 *
 * @example
 *   const nb = await readNeighbours(redis, ['i1', 'i2']); // Map { 'i1' => [{ itemId, score }] }
 */
export async function readNeighbours(
  redis: Redis,
  itemIds: readonly string[],
  version?: number,
): Promise<Map<string, ScoredItem[]>> {
  const out = new Map<string, ScoredItem[]>();
  const v = version ?? (await currentVersion(redis));
  if (v === null || itemIds.length === 0) return out;
  // GETs in a pipeline rather than one MGET: the keys live in different cluster slots.
  const pipeline = redis.pipeline();
  for (const id of itemIds) pipeline.get(BATCH.neighbours(id, v));
  const replies = (await pipeline.exec()) ?? [];
  itemIds.forEach((id, i) => {
    const [err, value] = replies[i] ?? [null, null];
    if (err) throw err;
    const list = decode(value as string | null).map(([itemId, score]) => ({ itemId, score }));
    if (list.length > 0) out.set(id, list);
  });
  return out;
}

/**
 * The `k` most popular items overall (`category` null) or of one category, best first.
 *
 * @example
 *   const top = await readPopular(redis, null, 20);
 */
export async function readPopular(
  redis: Redis,
  category: string | null,
  k: number,
  version?: number,
): Promise<ScoredItem[]> {
  const v = version ?? (await currentVersion(redis));
  if (v === null) return [];
  return decode(await redis.get(BATCH.popular(category, v)))
    .slice(0, k)
    .map(([itemId, score]) => ({ itemId, score }));
}
