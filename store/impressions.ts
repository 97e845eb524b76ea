/**
 * Impression counts per user: the impressions role (`stream/roles/impressions.ts`) adds one
 * impression per item of each served feed to `{u:<userId>}:imp` (see `userImpressionsKey`), and
 * an interaction with an item resets its count. The feed service reads the hash to demote items
 * shown `fatigueImpressions` times or more without an interaction (impression fatigue).
 *
 * One Lua script per user and chunk, so an update is atomic and a redelivered served record
 * changes nothing: the hash remembers the last applied `<partition>:<offset>` of the served
 * topic (a user's records are all on one partition, the topic is keyed by userId), and records
 * at or below it are skipped. Resets are idempotent by nature (HDEL). The hash is bounded: past
 * `maxItems` fields the items seen only once are dropped first, and if that is not enough the
 * whole hash starts over; it expires `ttlSec` after the latest update.
 *
 * @example
 *   const store = new ImpressionStore(redis, { maxItems: 500, ttlSec: 7 * 86400 });
 *   await store.record([{ userId: 'u1', itemIds: ['i1', 'i2'], partition: 0, offset: '41' }]);
 *   const counts = await store.read('u1'); // Map { 'i1' => 1, 'i2' => 1 }
 */
import { openPipeline, type RedisClient } from './redis.js';
import { DependencyUnavailableError } from '../core/index.js';
import { IMPRESSIONS_OFFSET_FIELD, userImpressionsKey } from './keys.js';

export interface ImpressionOptions {
  /** Items kept per user at most. @default 500 */
  maxItems?: number;
  /** The hash expires this long after its latest update, seconds. @default 604800 (7 days) */
  ttlSec?: number;
}

/** One served feed as the store needs it. */
export interface ImpressionRecord {
  userId: string;
  itemIds: readonly string[];
  partition: number;
  offset: string;
}

const RECORD = `
local key, field = KEYS[1], '${IMPRESSIONS_OFFSET_FIELD}'
local cap, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local applied = 0
local i = 3
while i <= #ARGV do
  local part, off, n = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local skip = false
  local o = redis.call('HGET', key, field)
  if o then
    local sep = string.find(o, ':', 1, true)
    if string.sub(o, 1, sep - 1) == part and off <= tonumber(string.sub(o, sep + 1)) then skip = true end
  end
  if not skip then
    for j = i + 3, i + 2 + n do redis.call('HINCRBY', key, ARGV[j], 1) end
    redis.call('HSET', key, field, part .. ':' .. ARGV[i + 1])
    applied = applied + 1
  end
  i = i + 3 + n
end
if applied > 0 then
  if redis.call('HLEN', key) > cap + 1 then
    local flat = redis.call('HGETALL', key)
    local ones = {}
    for k = 1, #flat, 2 do
      if flat[k] ~= field and flat[k + 1] == '1' then ones[#ones + 1] = flat[k] end
    end
    for k = 1, #ones, 1000 do redis.call('HDEL', key, unpack(ones, k, math.min(k + 999, #ones))) end
    if redis.call('HLEN', key) > cap + 1 then
      local o = redis.call('HGET', key, field)
      redis.call('DEL', key)
      redis.call('HSET', key, field, o)
    end
  end
  redis.call('EXPIRE', key, ttl)
end
return applied
`;

type ScriptRedis = RedisClient & {
  recsysRecordImpressions(key: string, ...args: (string | number)[]): Promise<number>;
};

export class ImpressionStore {
  readonly #redis: ScriptRedis;
  readonly #cap: number;
  readonly #ttlSec: number;

  constructor(redis: RedisClient, options: ImpressionOptions = {}) {
    if (!('recsysRecordImpressions' in redis)) {
      redis.defineCommand('recsysRecordImpressions', { numberOfKeys: 1, lua: RECORD });
    }
    this.#redis = redis as ScriptRedis;
    this.#cap = options.maxItems ?? 500;
    this.#ttlSec = options.ttlSec ?? 7 * 86_400;
  }

  /** Adds one impression per item of each record (one script per user, one round trip). */
  async record(records: readonly ImpressionRecord[]): Promise<void> {
    const byUser = new Map<string, (string | number)[]>();
    for (const r of records) {
      let args = byUser.get(r.userId);
      if (!args) byUser.set(r.userId, (args = [this.#cap, this.#ttlSec]));
      const items = [...new Set(r.itemIds)];
      args.push(String(r.partition), r.offset, items.length, ...items);
    }
    if (byUser.size === 0) return;
    const pipeline = openPipeline(this.#redis) as unknown as {
      recsysRecordImpressions(key: string, ...args: (string | number)[]): void;
      exec(): Promise<[Error | null, unknown][] | null>;
    };
    for (const [userId, args] of byUser) {
      pipeline.recsysRecordImpressions(userImpressionsKey(userId), ...args);
    }
    const replies = await pipeline.exec();
    if (!replies) throw new DependencyUnavailableError('redis', 'pipeline aborted');
    for (const [err] of replies) if (err) throw err;
  }

  /** Forgets the impressions of items a user interacted with. */
  async reset(interactions: readonly { userId: string; itemId: string }[]): Promise<void> {
    if (interactions.length === 0) return;
    const pipeline = openPipeline(this.#redis);
    for (const { userId, itemId } of interactions) {
      pipeline.hdel(userImpressionsKey(userId), itemId);
    }
    const replies = await pipeline.exec();
    for (const [err] of replies ?? []) if (err) throw err;
  }

  /** A user's impression counts (item -> count); empty for a user never served. */
  async read(userId: string): Promise<Map<string, number>> {
    return parseImpressions(await this.#redis.hgetall(userImpressionsKey(userId)));
  }
}

/** The raw hash as a map item -> count, without the offset field. */
export function parseImpressions(h: Record<string, string>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [field, value] of Object.entries(h)) {
    if (field !== IMPRESSIONS_OFFSET_FIELD) out.set(field, Number(value));
  }
  return out;
}
