/**
 * The impressions role: consumes `recsys.served.v1` (one record per feed served, key = userId)
 * and the events topic in its own consumer group; served feeds add impressions, interactions
 * reset them (`store/impressions.ts`).
 */
import type { RoleDeps, StreamRole } from '../../core/index.js';
import type { ServedFeed, UserEvent } from '../../schemas/index.js';
import { ImpressionStore } from '../../store/impressions.js';
import { createRedis, redisHealth } from '../../store/redis.js';
import { consumerRole } from './consumer-role.js';

export function startImpressions(deps: RoleDeps & { groupId?: string }): StreamRole {
  const { config } = deps;
  const redis = createRedis(config.redis.url, 'recsys-impressions');
  const store = new ImpressionStore(redis);
  const servedTopic = config.kafka.topics.served;
  return consumerRole<ServedFeed | UserEvent>(deps, {
    role: 'impressions',
    groupId: deps.groupId ?? config.consumer.groups.impressions,
    topics: [servedTopic, config.kafka.topics.events],
    // A new group counts the whole retained served log: those impressions happened (the hash
    // TTL bounds how long they matter).
    fromBeginning: true,
    handle: () => async (records) => {
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
    checks: { redis: () => redisHealth(redis, config.healthTimeoutMs) },
    onStop: async () => redis.disconnect(),
  });
}
