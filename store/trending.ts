/**
 * Trending items: event counts per item over sliding windows (default 1 h and 24 h), overall and
 * per category, kept in Redis sorted sets so the top k is read in O(log n + k).
 *
 * Each window W is cut into B buckets of W/B (its resolution). An event adds 1 to its item in
 * the bucket of its time and in the window's running sets (overall and its category's); a
 * bucket member is `<category> <item>`, so one bucket set per window serves both. {@link TrendingStore.advance}, run
 * on a timer, takes every bucket that left the window and subtracts its counts from the running
 * set (member by member: O(bucket size * log n), not a union over the whole window), then
 * deletes it. So the running set always equals the sum of the live buckets.
 *
 * Shards (`RECSYS_TRENDING_SHARDS`, 16 by default on a Redis Cluster): an item's counts live in
 * shard {@link trendShard}(item) under its own hash tag (`TRENDING` in keys.ts), so the writes of
 * all users spread over that many slots instead of one hot slot. Every script touches one shard;
 * a read merges the shards' top k into the same list one slot would give.
 *
 * Exactly once under redelivery: each chunk comes from one Kafka partition; the script stores
 * the partition's last applied offset and applies a chunk only if the stored offset is still
 * the one the caller read before (compare-and-set), then moves it to the chunk's last offset.
 * Records at or below the stored offset are filtered out before counting.
 *
 * @example
 *   const trending = new TrendingStore(redis, config.trending);
 *   await trending.apply('recsys.events.v1', 0, records); // one partition's chunk, in order
 *   const top = await trending.top(3600, null, 20); // [[itemId, count], ...], most first
 */
import type { RedisClient } from './redis.js';
import { TRENDING, trendShard } from './keys.js';

export interface TrendingOptions {
  windowsSec: readonly number[];
  buckets: number;
  /** Shards the items are spread over (`TRENDING` in keys.ts). @default 1 */
  shards?: number;
}

/** One record to count: its item, the item's category (null when unknown) and time. */
export interface TrendingRecord {
  itemId: string;
  category: string | null;
  ts: number;
  offset: string;
}

// Lua expressions standing in for the window, bucket and category, so the names come from
// the builders in keys.ts.
const L = { sec: "' .. sec .. '", b: "' .. b .. '", cat: "' .. cat .. '", tag: "' .. tag .. '" };
// The shard's hash tag, from its meta key (KEYS[1] = TRENDING.meta(tag)): every key a script
// touches is in the meta key's slot.
const TAG = `local tag = string.sub(KEYS[1], 1, #KEYS[1] - ${TRENDING.meta('').length})`;
const lua = (s: string): string => `'${s}'`;

const APPLY = `
local meta = KEYS[1]
${TAG}
local wmField, expected, newWm = ARGV[1], ARGV[2], ARGV[3]
if (redis.call('HGET', meta, wmField) or '') ~= expected then return 0 end
local nw = tonumber(ARGV[4])
local secs, heads = {}, {}
for w = 1, nw do
  secs[w] = ARGV[4 + w]
  heads[w] = tonumber(redis.call('HGET', meta, 'h:' .. secs[w]))
end
local i = 5 + nw
while i <= #ARGV do
  local item, cat, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  for w = 1, nw do
    local sec, b = secs[w], tonumber(ARGV[i + 2 + w])
    -- A bucket that already left the window is not counted (it would never be subtracted).
    if heads[w] == nil or b >= heads[w] then
      -- One bucket set per window; members carry their category ('<cat> <item>', neither has
      -- spaces) so retiring a bucket can subtract from the category's window too.
      local member = item
      if cat ~= '' then member = cat .. ' ' .. item end
      redis.call('ZINCRBY', ${lua(TRENDING.bucket(L.sec, L.b, L.tag))}, n, member)
      redis.call('ZINCRBY', ${lua(TRENDING.window(L.sec, null, L.tag))}, n, item)
      redis.call('ZADD', ${lua(TRENDING.buckets(L.sec, L.tag))}, b, b)
      if cat ~= '' then
        redis.call('ZINCRBY', ${lua(TRENDING.window(L.sec, L.cat, L.tag))}, n, item)
      end
    end
  end
  i = i + 3 + nw
end
redis.call('HSET', meta, wmField, newWm)
return 1
`;

const ADVANCE = `
local meta = KEYS[1]
${TAG}
local now = tonumber(ARGV[1])
local function decr(windowKey, n, item)
  if tonumber(redis.call('ZINCRBY', windowKey, -n, item)) <= 0 then
    redis.call('ZREM', windowKey, item)
  end
end
local moved = 0
for w = 2, #ARGV, 3 do
  local sec, width, count = ARGV[w], tonumber(ARGV[w + 1]), tonumber(ARGV[w + 2])
  local head = math.floor(now / width) - count + 1
  local old = tonumber(redis.call('HGET', meta, 'h:' .. sec))
  if old == nil or head > old then
    local expired = redis.call('ZRANGEBYSCORE', ${lua(TRENDING.buckets(L.sec, L.tag))}, '-inf', '(' .. head)
    for _, b in ipairs(expired) do
      local bucketKey = ${lua(TRENDING.bucket(L.sec, L.b, L.tag))}
      local rows = redis.call('ZRANGE', bucketKey, 0, -1, 'WITHSCORES')
      for j = 1, #rows, 2 do
        local member, n = rows[j], tonumber(rows[j + 1])
        local sp = string.find(member, ' ', 1, true)
        if sp then
          local cat, item = string.sub(member, 1, sp - 1), string.sub(member, sp + 1)
          decr(${lua(TRENDING.window(L.sec, null, L.tag))}, n, item)
          decr(${lua(TRENDING.window(L.sec, L.cat, L.tag))}, n, item)
        else
          decr(${lua(TRENDING.window(L.sec, null, L.tag))}, n, member)
        end
      end
      redis.call('DEL', bucketKey)
      redis.call('ZREM', ${lua(TRENDING.buckets(L.sec, L.tag))}, b)
      moved = moved + 1
    end
    redis.call('HSET', meta, 'h:' .. sec, string.format('%d', head))
  end
end
return moved
`;

type ScriptRedis = RedisClient & {
  recsysTrendingApply(key: string, ...args: (string | number)[]): Promise<number>;
  recsysTrendingAdvance(key: string, ...args: (string | number)[]): Promise<number>;
};

export class TrendingStore {
  readonly #redis: ScriptRedis;
  readonly #windows: { sec: number; widthMs: number }[];
  readonly #buckets: number;
  readonly #tags: string[];

  constructor(redis: RedisClient, options: TrendingOptions) {
    if (!('recsysTrendingApply' in redis)) {
      redis.defineCommand('recsysTrendingApply', { numberOfKeys: 1, lua: APPLY });
      redis.defineCommand('recsysTrendingAdvance', { numberOfKeys: 1, lua: ADVANCE });
    }
    this.#redis = redis as ScriptRedis;
    this.#buckets = options.buckets;
    this.#windows = options.windowsSec.map((sec) => ({
      sec,
      widthMs: Math.max(1, Math.floor((sec * 1000) / options.buckets)),
    }));
    const shards = options.shards ?? 1;
    this.#tags = Array.from({ length: shards }, (_, s) => TRENDING.tag(s, shards));
  }

  /**
   * Counts one chunk of one topic-partition, once. Records at or below the partition's applied
   * offset are skipped; a concurrent writer (a rebalance in progress) makes the call re-read.
   * With several shards, each shard keeps its own applied offset and takes its items' part of
   * the chunk in one script (a shard's part is applied once, whatever the others did).
   */
  async apply(
    topic: string,
    partition: number,
    records: readonly TrendingRecord[],
    now = Date.now(),
  ): Promise<void> {
    if (records.length === 0) return;
    // The highest offset (a record retried after a partial failure comes after later ones).
    const last = records.reduce((m, r) => (BigInt(r.offset) > BigInt(m) ? r.offset : m), '-1');
    if (this.#tags.length === 1) {
      await this.#applyShard(this.#tags[0] as string, topic, partition, records, last, now);
      return;
    }
    const byShard = new Map<number, TrendingRecord[]>();
    for (const r of records) {
      const s = trendShard(r.itemId, this.#tags.length);
      const list = byShard.get(s);
      if (list) list.push(r);
      else byShard.set(s, [r]);
    }
    await Promise.all(
      [...byShard].map(([s, part]) =>
        this.#applyShard(this.#tags[s] as string, topic, partition, part, last, now),
      ),
    );
  }

  async #applyShard(
    tag: string,
    topic: string,
    partition: number,
    records: readonly TrendingRecord[],
    last: string,
    now: number,
  ): Promise<void> {
    const field = `o:${topic}:${partition}`;
    const meta = TRENDING.meta(tag);
    for (;;) {
      const applied = await this.#redis.hget(meta, field);
      const floor = applied === null ? -1n : BigInt(applied);
      const fresh = records.filter((r) => BigInt(r.offset) > floor);
      if (fresh.length === 0) return;
      // One increment per distinct (item, category, buckets): a chunk of a popular item costs
      // one ZINCRBY, not one per event.
      const counts = new Map<string, { r: TrendingRecord; b: number[]; n: number }>();
      for (const r of fresh) {
        // A clock ahead of ours would park counts in a future bucket; count them as now.
        const ts = Math.min(r.ts, now);
        const b = this.#windows.map((w) => Math.floor(ts / w.widthMs));
        const k = `${r.itemId}\u0000${r.category ?? ''}\u0000${b.join(',')}`;
        const hit = counts.get(k);
        if (hit) hit.n += 1;
        else counts.set(k, { r, b, n: 1 });
      }
      const args: (string | number)[] = [
        field,
        applied ?? '',
        last,
        this.#windows.length,
        ...this.#windows.map((w) => w.sec),
      ];
      for (const { r, b, n } of counts.values()) args.push(r.itemId, r.category ?? '', n, ...b);
      if ((await this.#redis.recsysTrendingApply(meta, ...args)) === 1) return;
    }
  }

  /**
   * Retires buckets that left their window, in every shard; returns how many. Safe from many
   * processes.
   */
  async advance(now = Date.now()): Promise<number> {
    const args: (string | number)[] = [now];
    for (const w of this.#windows) args.push(w.sec, w.widthMs, this.#buckets);
    const moved = await Promise.all(
      this.#tags.map((tag) => this.#redis.recsysTrendingAdvance(TRENDING.meta(tag), ...args)),
    );
    return moved.reduce((a, b) => a + b, 0);
  }

  /**
   * Top `k` items of a window, overall or in one category, with their counts, most first; equal
   * counts in reverse byte order of the ids, as ZREVRANGE orders them. With several shards, each
   * shard's top `k` are merged: an item lives in one shard, so the top `k` of the union is the
   * top `k` of the unsharded set, in the same order.
   */
  async top(windowSec: number, category: string | null, k: number): Promise<[string, number][]> {
    const flats =
      this.#tags.length === 1
        ? [await this.#zrevrange(windowSec, category, k, this.#tags[0] as string)]
        : await Promise.all(this.#tags.map((tag) => this.#zrevrange(windowSec, category, k, tag)));
    const out: [string, number][] = [];
    for (const flat of flats) {
      for (let i = 0; i < flat.length; i += 2) out.push([flat[i] as string, Number(flat[i + 1])]);
    }
    if (flats.length === 1) return out;
    out.sort((a, b) => b[1] - a[1] || Buffer.compare(Buffer.from(b[0]), Buffer.from(a[0])));
    return out.slice(0, k);
  }

  #zrevrange(windowSec: number, category: string | null, k: number, tag: string) {
    return this.#redis.zrevrange(TRENDING.window(windowSec, category, tag), 0, k - 1, 'WITHSCORES');
  }
}
