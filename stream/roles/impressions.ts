/**
 * Impression counts per user, kept from the served log: the impressions role consumes
 * `recsys.served.v1` (one record per feed served, key = userId) in its own consumer group and
 * adds one impression per item shown to `{u:<userId>}:imp` (see `userImpressionsKey`); the
 * events topic is consumed in the same group and an interaction with an item resets its count.
 * The feed service reads the hash to demote items shown `fatigueImpressions` times or more
 * without an interaction (impression fatigue).
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
import type { Redis } from 'ioredis';
import { createDecoder, type ServedFeed, type UserEvent } from '../../schemas/index.js';
import { consumerMetrics, startConsumer, type ConsumerHandle } from '../consumer.js';
import { createKafka, ensureTopics } from '../kafka.js';
import { IMPRESSIONS_OFFSET_FIELD, userImpressionsKey } from '../../store/keys.js';
import { createRedis } from '../../store/redis.js';
import { kafkaRedisReadiness, consumerFailure } from './role.js';
import { retryForever, type RoleDeps, type StreamRole } from '../../core/index.js';

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

type ScriptRedis = Redis & {
  recsysRecordImpressions(key: string, ...args: (string | number)[]): Promise<number>;
};

export class ImpressionStore {
  readonly #redis: ScriptRedis;
  readonly #cap: number;
  readonly #ttlSec: number;

  constructor(redis: Redis, options: ImpressionOptions = {}) {
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
    const pipeline = this.#redis.pipeline() as unknown as {
      recsysRecordImpressions(key: string, ...args: (string | number)[]): void;
      exec(): Promise<[Error | null, unknown][] | null>;
    };
    for (const [userId, args] of byUser) {
      pipeline.recsysRecordImpressions(userImpressionsKey(userId), ...args);
    }
    const replies = await pipeline.exec();
    if (!replies) throw new Error('redis pipeline aborted');
    for (const [err] of replies) if (err) throw err;
  }

  /** Forgets the impressions of items a user interacted with. */
  async reset(interactions: readonly { userId: string; itemId: string }[]): Promise<void> {
    if (interactions.length === 0) return;
    const pipeline = this.#redis.pipeline();
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

/**
 * The impressions role: served feeds add impressions, events reset them. One consumer group
 * over both topics; the decoder resolves each record's writer schema by id.
 */
export function startImpressions({
  config,
  log: parent,
  metrics,
  groupId = config.consumer.groups.impressions,
}: RoleDeps & { groupId?: string }): StreamRole {
  const log = parent.child({ role: 'impressions' });
  const kafka = createKafka(config.kafka, log, 'impressions');
  const redis = createRedis(config.redis.url, 'recsys-impressions');
  const store = new ImpressionStore(redis);
  const stopping = new AbortController();
  const servedTopic = config.kafka.topics.served;
  let consumer: ConsumerHandle | null = null;

  const ready = (async () => {
    await retryForever(log, stopping.signal)('kafka topics', () =>
      ensureTopics(kafka, config.kafka, log),
    );
    consumer = startConsumer<ServedFeed | UserEvent>({
      kafka,
      groupId,
      topics: [servedTopic, config.kafka.topics.events],
      // A new group counts the whole retained served log: those impressions happened (the
      // hash TTL bounds how long they matter).
      fromBeginning: true,
      decoder: createDecoder<ServedFeed | UserEvent>(config.registry.url),
      log,
      metrics: consumerMetrics(metrics),
      tuning: config.consumer,
      // Nothing to dead-letter here: the ingest bridge and the feed service wrote these records;
      // an undecodable one is logged and skipped.
      undecodable: async (bad) => {
        for (const r of bad) {
          log.warn({ topic: r.topic, offset: r.offset, err: r.error.message }, 'undecodable');
        }
      },
      handle: async (records) => {
        const first = records[0];
        if (!first) return;
        if (first.topic === servedTopic) {
          await store.record(
            records.map((r) => {
              const feed = r.value as ServedFeed;
              return {
                userId: feed.userId,
                itemIds: feed.items.map((i) => i.itemId),
                partition: r.partition,
                offset: r.offset,
              };
            }),
          );
        } else {
          await store.reset(
            records.map((r) => {
              const e = r.value as UserEvent;
              return { userId: e.userId, itemId: e.itemId };
            }),
          );
        }
      },
    });
    await consumer.ready;
    log.info({ group: groupId }, 'impressions consumer ready');
  })();
  ready.catch(() => undefined);

  const failed = consumerFailure(ready, () => consumer);

  return {
    ready,
    failed,
    readiness: kafkaRedisReadiness(config, kafka, redis, () => consumer),
    async stop() {
      stopping.abort(new Error('stopping'));
      await ready.catch(() => undefined);
      await consumer?.stop();
      redis.disconnect();
      log.info('impressions consumer stopped');
    },
  };
}
