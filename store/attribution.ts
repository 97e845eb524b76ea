/**
 * The feeds each user was served last, for online attribution: the attribution role
 * (`stream/roles/attribution.ts`) records every served feed here and reads them back when the
 * user's events arrive, to tell which feed (and so which model version) showed the item.
 *
 * One list per user, `{u:<userId>}:sf` (see `userServedFeedsKey`), newest received first, each
 * entry one feed as `<requestId> <ts> <modelVersion, URI-encoded> <itemId>...` (ids hold no
 * spaces, `schemas/validate.ts`). It stays bounded on every axis: at most `maxFeeds` entries
 * (LTRIM), at most `maxItems` items per feed (the top of the feed; hit rate looks at the top 20),
 * and the key expires `ttlMs` after the latest feed (twice the attribution window by default, so
 * a lagging consumer still finds a feed its event may count for).
 *
 * A redelivered served record changes nothing: the script skips a requestId the list holds and
 * says so, so the caller counts each feed once.
 *
 * @example
 *   const store = new ServedFeedStore(redis, { maxFeeds: 5, maxItems: 50, ttlMs: 3_600_000 });
 *   await store.record([{ requestId: 'r1', userId: 'u1', ts: 1, modelVersion: '3', itemIds: ['i1'] }]);
 *   const feeds = await store.read(['u1']); // Map { 'u1' => [{ requestId: 'r1', ts: 1, ... }] }
 */
import { openPipeline, type RedisClient } from './redis.js';
import { DependencyUnavailableError } from '../core/index.js';
import { userServedFeedsKey } from './keys.js';

export interface ServedFeedOptions {
  /** Feeds kept per user at most. @default 5 */
  maxFeeds?: number;
  /** Items kept per feed at most (the top of the feed). @default 50 */
  maxItems?: number;
  /** The list expires this long after its latest feed, ms. @default 3600000 (1 hour) */
  ttlMs?: number;
}

/** One served feed as the store keeps it; `itemIds` in the order shown (index = position). */
export interface StoredFeed {
  requestId: string;
  userId: string;
  /** When it was served, epoch ms. */
  ts: number;
  modelVersion: string;
  itemIds: readonly string[];
}

const RECORD = `
local key, cap, ttl, id = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local prefix = id .. ' '
for _, e in ipairs(redis.call('LRANGE', key, 0, -1)) do
  if string.sub(e, 1, #prefix) == prefix then return 0 end
end
redis.call('LPUSH', key, ARGV[4])
redis.call('LTRIM', key, 0, cap - 1)
redis.call('PEXPIRE', key, ttl)
return 1
`;

type ScriptPipeline = {
  recsysRecordServedFeed(key: string, ...args: (string | number)[]): void;
  exec(): Promise<[Error | null, unknown][] | null>;
};

export class ServedFeedStore {
  readonly #redis: RedisClient;
  readonly #maxFeeds: number;
  readonly #maxItems: number;
  readonly #ttlMs: number;

  constructor(redis: RedisClient, options: ServedFeedOptions = {}) {
    if (!('recsysRecordServedFeed' in redis)) {
      redis.defineCommand('recsysRecordServedFeed', { numberOfKeys: 1, lua: RECORD });
    }
    this.#redis = redis;
    this.#maxFeeds = options.maxFeeds ?? 5;
    this.#maxItems = options.maxItems ?? 50;
    this.#ttlMs = options.ttlMs ?? 3_600_000;
  }

  /**
   * Keeps each feed (one script each, one round trip for all); returns per feed whether it was
   * new (false: a redelivery of a feed the list still holds).
   */
  async record(feeds: readonly StoredFeed[]): Promise<boolean[]> {
    if (feeds.length === 0) return [];
    const pipeline = openPipeline(this.#redis) as unknown as ScriptPipeline;
    for (const f of feeds) {
      pipeline.recsysRecordServedFeed(
        userServedFeedsKey(f.userId),
        this.#maxFeeds,
        this.#ttlMs,
        f.requestId,
        encodeFeed(f, this.#maxItems),
      );
    }
    const replies = await pipeline.exec();
    if (!replies) throw new DependencyUnavailableError('redis', 'pipeline aborted');
    return replies.map(([err, applied]) => {
      if (err) throw err;
      return applied === 1;
    });
  }

  /** The kept feeds of each user (newest received first); users never served are absent. */
  async read(userIds: readonly string[]): Promise<Map<string, StoredFeed[]>> {
    const users = [...new Set(userIds)];
    const out = new Map<string, StoredFeed[]>();
    if (users.length === 0) return out;
    const pipeline = openPipeline(this.#redis);
    for (const u of users) pipeline.lrange(userServedFeedsKey(u), 0, -1);
    const replies = (await pipeline.exec()) ?? [];
    users.forEach((userId, i) => {
      const [err, entries] = replies[i] ?? [
        new DependencyUnavailableError('redis', 'pipeline aborted'),
        null,
      ];
      if (err) throw err;
      const feeds = (entries as string[]).map((e) => decodeFeed(userId, e));
      if (feeds.length > 0) out.set(userId, feeds);
    });
    return out;
  }
}

/** One list entry; the items cut to the top `maxItems`. */
export function encodeFeed(feed: StoredFeed, maxItems: number): string {
  const head = `${feed.requestId} ${feed.ts} ${encodeURIComponent(feed.modelVersion)}`;
  const items = feed.itemIds.slice(0, maxItems);
  return items.length === 0 ? head : `${head} ${items.join(' ')}`;
}

export function decodeFeed(userId: string, entry: string): StoredFeed {
  const [requestId = '', ts = '0', version = '', ...itemIds] = entry.split(' ');
  return { requestId, userId, ts: Number(ts), modelVersion: decodeURIComponent(version), itemIds };
}
