/**
 * The attribution role: online quality per model version, off the request path. It consumes the
 * served log (`recsys.served.v1`) and the events topic in its own consumer group, keeps each
 * user's last few served feeds in Redis (`store/attribution.ts`: capped and TTL'd), and counts:
 * - `recsys_online_served_items_total{position_bucket,model_version}`: items served;
 * - `recsys_online_attributed_events_total{type,model_version}`: events on an item that a feed
 *   served to the user within RECSYS_ATTRIBUTION_WINDOW_MS before the event showed (click-through
 *   and add-to-cart rates are these over served items);
 * - `recsys_online_events_total{model_version}` and `recsys_online_hits_total{k,model_version}`:
 *   events of users served a feed within the window, and those whose item was in the top k
 *   (10, 20) of the last such feed: the online hit rate, the live counterpart of HitRate@k.
 *
 * Times are the server's: a feed's `ts` and the event's Kafka timestamp (set at ingest), so a
 * client's clock does not matter. Only feeds served before the event count: the fresh feed that
 * a click itself triggers (a live push) does not take the click's credit. Records older than the
 * window are skipped, so a new group reading the retained log counts only the last window.
 * Delivery is at least once: a redelivered served record is recognised by its requestId and not
 * counted again; a redelivered event chunk (after a crash) may count twice, which the counters,
 * being per process and reset on restart anyway, tolerate.
 */
import { Counter } from 'prom-client';
import type { RoleDeps, StreamRole } from '../../core/index.js';
import { EVENT_TYPES, type ServedFeed, type UserEvent } from '../../schemas/index.js';
import { ServedFeedStore, type StoredFeed } from '../../store/attribution.js';
import { createRedis, redisHealth } from '../../store/redis.js';
import type { ConsumedRecord } from '../consumer.js';
import { consumerRole } from './consumer-role.js';

/** The k of the online hit rate. */
export const HIT_KS = [10, 20] as const;

/** Position buckets of served items (0-based positions). */
export function positionBucket(position: number): string {
  if (position < 5) return '0-4';
  if (position < 10) return '5-9';
  if (position < 20) return '10-19';
  if (position < 50) return '20-49';
  return '50+';
}

/** What one event counts for. */
export interface EventAttribution {
  /** The model version of the newest in-window feed that showed the item, or null. */
  attributedTo: string | null;
  /** The user's last feed served within the window before the event, or null. */
  last: { modelVersion: string; position: number } | null;
}

/**
 * Attributes an event at `eventMs` on `itemId` to the user's kept feeds: only feeds served at or
 * before the event and at most `windowMs` before it count. `position` is the item's 0-based
 * position in the last such feed, -1 when it was not in it.
 */
export function attributeEvent(
  feeds: readonly StoredFeed[],
  itemId: string,
  eventMs: number,
  windowMs: number,
): EventAttribution {
  const live = feeds
    .filter((f) => f.ts <= eventMs && eventMs - f.ts <= windowMs)
    .sort((a, b) => b.ts - a.ts);
  const newest = live[0];
  const showing = live.find((f) => f.itemIds.includes(itemId));
  return {
    attributedTo: showing ? showing.modelVersion : null,
    last: newest
      ? { modelVersion: newest.modelVersion, position: newest.itemIds.indexOf(itemId) }
      : null,
  };
}

export function startAttribution(deps: RoleDeps & { groupId?: string }): StreamRole {
  const { config, metrics } = deps;
  const windowMs = config.consumer.attributionWindowMs;
  const redis = createRedis(config.redis.url, 'recsys-attribution');
  const store = new ServedFeedStore(redis, { ttlMs: 2 * windowMs });
  const servedTopic = config.kafka.topics.served;
  const counters = onlineCounters(metrics);

  const onServed = async (records: ConsumedRecord<ServedFeed | UserEvent>[]): Promise<void> => {
    const feeds = records.map((r) => r.value as ServedFeed);
    const applied = await store.record(
      feeds.map((f) => ({
        requestId: f.requestId,
        userId: f.userId,
        ts: f.ts,
        modelVersion: f.modelVersion,
        itemIds: f.items.map((i) => i.itemId),
      })),
    );
    feeds.forEach((f, i) => {
      if (applied[i]) counters.served(f.modelVersion, f.items.length);
    });
  };

  const onEvents = async (records: ConsumedRecord<ServedFeed | UserEvent>[]): Promise<void> => {
    const events = records.map((r) => ({ event: r.value as UserEvent, atMs: r.timestamp }));
    const feeds = await store.read(events.map((e) => e.event.userId));
    for (const { event, atMs } of events) {
      const kept = feeds.get(event.userId);
      if (!kept) continue;
      const a = attributeEvent(kept, event.itemId, atMs, windowMs);
      if (a.attributedTo !== null) counters.attributed(event.type, a.attributedTo);
      if (a.last) counters.event(a.last.modelVersion, a.last.position);
    }
  };

  return consumerRole<ServedFeed | UserEvent>(deps, {
    role: 'attribution',
    groupId: deps.groupId ?? config.consumer.groups.attribution,
    topics: [servedTopic, config.kafka.topics.events],
    // A new group reads the retained log, but only the last window counts (below).
    fromBeginning: true,
    handle: () => async (records) => {
      const since = Date.now() - windowMs;
      const recent = records.filter((r) => r.timestamp >= since);
      const first = recent[0];
      if (!first) return;
      if (first.topic === servedTopic) await onServed(recent);
      else await onEvents(recent);
    },
    checks: { redis: () => redisHealth(redis, config.healthTimeoutMs) },
    onStop: async () => redis.disconnect(),
  });
}

interface OnlineCounters {
  /** A feed of `items` items served by `modelVersion`. */
  served(modelVersion: string, items: number): void;
  attributed(type: string, modelVersion: string): void;
  /** An event of a user whose last feed was by `modelVersion`; `position` -1: not in it. */
  event(modelVersion: string, position: number): void;
}

/**
 * The four counters. A model version's children are created together, at zero, the first time
 * it is seen: a CTR of 0 must be a series with value 0, not an absent one (an absent ratio
 * satisfies no alert expression, so a model with no clicks at all would never alert).
 */
function onlineCounters(metrics: RoleDeps['metrics']): OnlineCounters {
  const servedItems = new Counter({
    name: 'recsys_online_served_items_total',
    help: 'items served in feeds, by position bucket and model version',
    labelNames: ['position_bucket', 'model_version'],
    registers: [metrics],
  });
  const attributedEvents = new Counter({
    name: 'recsys_online_attributed_events_total',
    help: 'events on an item a feed served to the user within the attribution window showed, by type and model version',
    labelNames: ['type', 'model_version'],
    registers: [metrics],
  });
  const hits = new Counter({
    name: 'recsys_online_hits_total',
    help: "events whose item was in the top k of the user's last feed, by k and model version",
    labelNames: ['k', 'model_version'],
    registers: [metrics],
  });
  const events = new Counter({
    name: 'recsys_online_events_total',
    help: 'events of users served a feed within the attribution window (the hit rate denominator)',
    labelNames: ['model_version'],
    registers: [metrics],
  });
  const seen = new Set<string>();
  const touch = (v: string): void => {
    if (seen.has(v)) return;
    seen.add(v);
    for (const b of ['0-4', '5-9', '10-19', '20-49', '50+']) servedItems.labels(b, v).inc(0);
    for (const t of EVENT_TYPES) attributedEvents.labels(t, v).inc(0);
    for (const k of HIT_KS) hits.labels(String(k), v).inc(0);
    events.labels(v).inc(0);
  };
  return {
    served(v, items) {
      touch(v);
      // Per bucket at once: a feed of 50 is five increments, not fifty.
      const byBucket = new Map<string, number>();
      for (let p = 0; p < items; p++) {
        const b = positionBucket(p);
        byBucket.set(b, (byBucket.get(b) ?? 0) + 1);
      }
      for (const [b, n] of byBucket) servedItems.labels(b, v).inc(n);
    },
    attributed(type, v) {
      touch(v);
      attributedEvents.labels(type, v).inc();
    },
    event(v, position) {
      touch(v);
      events.labels(v).inc();
      for (const k of HIT_KS) if (position >= 0 && position < k) hits.labels(String(k), v).inc();
    },
  };
}
