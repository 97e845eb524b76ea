/**
 * Versioned batch output in Redis: the writer the batch publishes with and the readers serving
 * and tests use, over one key layout (`BATCH` in `keys.ts`) and one codec.
 *
 * Publishing: {@link CandidateStore.beginVersion} takes a new version v from `{batch}:seq` (never
 * reused, so a half-written earlier attempt cannot mix with it); a {@link VersionWriter} writes
 * every key of v in pipelined chunks; {@link CandidateStore.publish} writes the version's meta,
 * then switches `{batch}:current` to v and adds v to `{batch}:versions` in one MULTI (one hash
 * slot, so also on a Redis Cluster).
 *
 * Why a reader never mixes two batches, also on a Redis Cluster where a user's candidates, the
 * items' neighbours and the popular lists lie on different nodes: it is a version check, not a
 * multi-key transaction. Every key of a batch carries its version in its name and is written
 * before the pointer names that version; a reader reads the pointer once and then reads only
 * keys of that version. A reader that read v-1 just before the switch still reads v-1 in full:
 * retired keys live on for the grace TTL. So the switch is atomic for every user at once.
 *
 * Versions beyond the newest `keepVersions` are retired: every key of a version neither kept nor
 * newer than v gets a grace TTL (a reader that read the old pointer a moment ago still finds its
 * keys; 0 deletes at once). Retiring scans every master of a cluster.
 *
 * Codec: a list is one string of `id,score[,src]` entries joined by spaces, best first (src, on
 * user candidates only: `n` co-visitation, `c` category). About 20 bytes an entry, a quarter of
 * what a sorted set of the same list costs.
 *
 * Reads send their command when called, so reads started together share one round trip on a
 * connection that coalesces writes (`createRedis(..., { coalesceWrites: true })`).
 *
 * @example
 *   const store = new CandidateStore(redis);
 *   const version = await store.currentVersion();
 *   const { ids, scores } = await store.userCandidates('u42', version);
 *   const items = await store.readCandidates('u42'); // { version, items: [{ itemId, score, source }] }
 */
import { openPipeline, type RedisClient, scanKeys } from './redis.js';
import { type Logger, RecsysError } from '../core/index.js';
import { BATCH } from './keys.js';

/** Writing a version failed (a Redis write error); the live version is untouched. */
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

/** A decoded list: ids and scores as parallel arrays, best first. */
export interface DecodedList {
  ids: string[];
  scores: Float64Array;
}

export interface ScoredItem {
  itemId: string;
  score: number;
}

export interface Candidate extends ScoredItem {
  /** Generator that proposed it: `covisit` or `category`. */
  source: string;
}

/** The lists a version holds, by what their key names. */
export type CandidateList = 'users' | 'neighbours' | 'ease' | 'popular' | 'itemPopularity';

/** Source names of the generators and their one-letter codes in stored candidate lists. */
export const SOURCE_CODES: Readonly<Record<string, string>> = { covisit: 'n', category: 'c' };
const SOURCE_NAMES: Readonly<Record<string, string>> = { n: 'covisit', c: 'category' };

const LIST_KEYS: Readonly<Record<CandidateList, (id: string, version: number) => string>> = {
  users: (id, v) => BATCH.candidates(id, v),
  neighbours: (id, v) => BATCH.neighbours(id, v),
  ease: (id, v) => BATCH.ease(id, v),
  // The overall list has the empty id.
  popular: (id, v) => BATCH.popular(id === '' ? null : id, v),
  itemPopularity: (id, v) => BATCH.itemPopularity(id, v),
};

/** Writes the lists of one version in pipelined chunks; see {@link CandidateStore.writer}. */
export class VersionWriter {
  readonly #redis: RedisClient;
  readonly #version: number;
  readonly #chunkKeys: number;
  #pipeline: ReturnType<typeof openPipeline>;
  #pending = 0;

  constructor(redis: RedisClient, version: number, chunkKeys: number) {
    this.#redis = redis;
    this.#version = version;
    this.#chunkKeys = chunkKeys;
    this.#pipeline = openPipeline(redis);
  }

  /** Queues one list (already encoded, `id,score[,src] ...`); sends a chunk when full. */
  async put(list: CandidateList, id: string, encoded: string): Promise<void> {
    this.#pipeline.set(LIST_KEYS[list](id, this.#version), encoded);
    if (++this.#pending >= this.#chunkKeys) await this.flush();
  }

  /** Sends what is queued; rejects with {@link BatchPublishError} when a write failed. */
  async flush(): Promise<void> {
    if (this.#pending === 0) return;
    const replies = await this.#pipeline.exec();
    for (const [err] of replies ?? []) {
      if (err) throw new BatchPublishError(this.#version, 'write failed', err);
    }
    this.#pipeline = openPipeline(this.#redis);
    this.#pending = 0;
  }
}

export interface PublishVersionOptions {
  /** Versions kept (the live one included). */
  keepVersions: number;
  /** TTL given to keys of retired versions, seconds; 0 deletes them at once. @default 300 */
  retireGraceSec?: number;
}

export class CandidateStore {
  readonly #redis: RedisClient;

  constructor(redis: RedisClient) {
    this.#redis = redis;
  }

  // ---------------------------------------------------------------------------- writing

  /** A new version number (never reused). */
  async beginVersion(): Promise<number> {
    // A store written before the `{batch}` tag continues its numbers (a version is never reused).
    const legacy = await this.#redis.get(BATCH.legacy.sequence);
    if (legacy !== null) await this.#redis.set(BATCH.sequence, legacy, 'NX');
    return this.#redis.incr(BATCH.sequence);
  }

  /** A writer for the lists of `version`, `chunkKeys` keys per round trip. */
  writer(version: number, chunkKeys = 2000): VersionWriter {
    return new VersionWriter(this.#redis, version, chunkKeys);
  }

  /**
   * Records what `version` holds, makes it live in one transaction and retires versions beyond
   * the kept ones. Returns the version live before and the versions retired.
   */
  async publish(
    version: number,
    meta: Readonly<Record<string, number>>,
    options: PublishVersionOptions,
  ): Promise<{ previous: number | null; retired: number[] }> {
    const redis = this.#redis;
    await redis.hset(
      BATCH.meta(version),
      Object.fromEntries([
        ['createdAt', String(Date.now())],
        ...Object.entries(meta).map(([k, v]) => [k, String(v)]),
      ]),
    );
    const previousRaw = (await redis.get(BATCH.current)) ?? (await redis.get(BATCH.legacy.current));
    const switched = await redis
      .multi()
      .set(BATCH.current, String(version))
      .zadd(BATCH.versions, version, String(version))
      .exec();
    for (const [err] of switched ?? [[new Error('transaction aborted')]]) {
      if (err) throw new BatchPublishError(version, 'pointer not switched', err);
    }
    const retired = await retire(
      redis,
      version,
      options.keepVersions,
      options.retireGraceSec ?? 300,
    );
    return { previous: previousRaw === null ? null : Number(previousRaw), retired };
  }

  /**
   * Makes the newest kept version older than the live one live again, and retires the live one.
   * Returns both versions. Throws {@link BatchRollbackError} when there is none to go back to.
   *
   * @example
   *   const { from, to } = await store.rollback(log);
   */
  async rollback(
    log: Logger,
    options: { retireGraceSec?: number } = {},
  ): Promise<{ from: number; to: number }> {
    const redis = this.#redis;
    const current = await this.currentVersion();
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

  // ---------------------------------------------------------------------------- reading

  /** The live version, or null when none was published. */
  async currentVersion(): Promise<number | null> {
    // Before the first publish under the `{batch}` tag, the pointer of an older store.
    const v =
      (await this.#redis.get(BATCH.current)) ?? (await this.#redis.get(BATCH.legacy.current));
    return v === null ? null : Number(v);
  }

  /** What `version` holds (`publish`'s meta: counts, creation time, the blend's weights). */
  meta(version: number): Promise<Record<string, string>> {
    return this.#redis.hgetall(BATCH.meta(version));
  }

  /** A user's candidates of `version`, best first (empty when the user has none). */
  userCandidates(userId: string, version: number): Promise<DecodedList> {
    return this.#list('users', userId, version);
  }

  /** An item's co-visitation neighbours of `version`, best first (empty when none). */
  neighbours(itemId: string, version: number): Promise<DecodedList> {
    return this.#list('neighbours', itemId, version);
  }

  /** An item's EASE weights of `version` (`batch/ease.ts`), best first (empty when none). */
  ease(itemId: string, version: number): Promise<DecodedList> {
    return this.#list('ease', itemId, version);
  }

  /** The popular list of `version`, overall (`category` null) or of one category. */
  popular(category: string | null, version: number): Promise<DecodedList> {
    return this.#list('popular', category ?? '', version);
  }

  /**
   * Every item's train popularity in one category, best first; the category's popular list for
   * a version published before these lists existed.
   */
  async categoryPopularity(category: string, version: number): Promise<DecodedList> {
    const raw = await this.#redis.get(BATCH.itemPopularity(category, version));
    return decodeScored(raw ?? (await this.#redis.get(BATCH.popular(category, version))));
  }

  /**
   * A user's candidates with their sources, of the live version (or of `version`).
   *
   * @example
   *   const { version, items } = await store.readCandidates('u42');
   */
  async readCandidates(
    userId: string,
    version?: number,
  ): Promise<{ version: number | null; items: Candidate[] }> {
    const v = version ?? (await this.currentVersion());
    if (v === null) return { version: null, items: [] };
    const raw = await this.#redis.get(BATCH.candidates(userId, v));
    const { ids, scores } = decodeScored(raw);
    const sources = decodeSources(raw);
    const items = ids.map((itemId, i) => ({
      itemId,
      score: scores[i] as number,
      source: SOURCE_NAMES[sources[i] ?? ''] ?? sources[i] ?? 'batch',
    }));
    return { version: v, items };
  }

  /**
   * Co-visitation neighbours of each item (items without any are absent), of the live version
   * (or of `version`).
   */
  async readNeighbours(
    itemIds: readonly string[],
    version?: number,
  ): Promise<Map<string, ScoredItem[]>> {
    const out = new Map<string, ScoredItem[]>();
    const v = version ?? (await this.currentVersion());
    if (v === null) return out;
    const lists = await Promise.all(itemIds.map((id) => this.neighbours(id, v)));
    itemIds.forEach((id, i) => {
      const list = toItems(lists[i] as DecodedList, Infinity);
      if (list.length > 0) out.set(id, list);
    });
    return out;
  }

  /** The `k` most popular items overall (`category` null) or of one category. */
  async readPopular(category: string | null, k: number, version?: number): Promise<ScoredItem[]> {
    const v = version ?? (await this.currentVersion());
    if (v === null) return [];
    return toItems(await this.popular(category, v), k);
  }

  #list(list: CandidateList, id: string, version: number): Promise<DecodedList> {
    return this.#redis.get(LIST_KEYS[list](id, version)).then(decodeScored);
  }
}

function toItems(list: DecodedList, k: number): ScoredItem[] {
  const n = Math.min(k, list.ids.length);
  return Array.from({ length: n }, (_, i) => ({
    itemId: list.ids[i] as string,
    score: list.scores[i] as number,
  }));
}

/** The third field of each entry (`src`), or undefined. */
function decodeSources(value: string | null): (string | undefined)[] {
  if (!value) return [];
  return value.split(' ').map((entry) => entry.split(',')[2]);
}

/**
 * Keeps the newest `keep` versions of `batch:versions`, and gives every key of any other version
 * not newer than `upTo` a TTL of `graceSec` (0: deletes it). Returns the versions retired.
 */
async function retire(
  redis: RedisClient,
  upTo: number,
  keep: number,
  graceSec: number,
): Promise<number[]> {
  const kept = new Set((await redis.zrevrange(BATCH.versions, 0, keep - 1)).map(Number));
  await redis.zremrangebyrank(BATCH.versions, 0, -(keep + 1));
  const retired = new Set<number>();
  await scanKeys(redis, null, 5000, async (found) => {
    const pipeline = openPipeline(redis);
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
  });
  return [...retired].sort((a, b) => a - b);
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
 * {@link CandidateStore.readCandidates}.
 *
 * @example
 *   decodeScored('i1,0.9,n i2,0.5,c'); // { ids: ['i1', 'i2'], scores: Float64Array [0.9, 0.5] }
 */
export function decodeScored(value: string | null): DecodedList {
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
