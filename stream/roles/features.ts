/**
 * The session-feature role: consumes `recsys.events.v1` in its own group and, per chunk of one
 * partition, looks up the items' categories and applies the events to the users' features (one
 * atomic script per user, see features.ts; this is what the live feed waits for). Trending
 * counts (see trending.ts) gather per partition and go to Redis once a second; a partition's
 * offsets are committed only after both its features and its trending counts are in Redis.
 * A timer retires trending buckets.
 *
 * @example
 *   const role = startFeatures({ config, log, metrics });
 *   await role.ready;
 */
import { Counter } from 'prom-client';
import { createDecoder, type UserEvent } from '../../schemas/index.js';
import { CatalogStore } from '../../store/catalog.js';
import { consumerMetrics, startConsumer, type ConsumerHandle } from '../consumer.js';
import { createDeadLetter, undecodableToDlq, type DeadLetter } from '../dead-letter.js';
import {
  APPLIED,
  DUPLICATE,
  FeatureStore,
  REDELIVERED,
  type FeatureEvent,
} from '../../store/session-features.js';
import { createKafka, createProducer, ensureTopics } from '../kafka.js';
import { createRedis } from '../../store/redis.js';
import { kafkaRedisReadiness, consumerFailure } from './role.js';
import { retryForever, type RoleDeps, type StreamRole } from '../../core/index.js';
import { TrendingStore, type TrendingRecord } from '../../store/trending.js';

/** How often trending counts go to Redis (and offsets get committed), ms. */
const TRENDING_FLUSH_MS = 1000;
/** Records a partition may hold for trending before it flushes at once. */
const TRENDING_MAX_PENDING = 50_000;

const OUTCOMES = { [APPLIED]: 'applied', [REDELIVERED]: 'redelivered', [DUPLICATE]: 'duplicate' };

export function startFeatures({ config, log: parent, metrics }: RoleDeps): StreamRole {
  const log = parent.child({ role: 'features' });
  const kafka = createKafka(config.kafka, log, 'features');
  const producer = createProducer(kafka);
  const redis = createRedis(config.redis.url, 'recsys-features');
  const features = new FeatureStore(redis, config.features);
  const trending = new TrendingStore(redis, config.trending);
  const catalog = new CatalogStore(redis, { cacheTtlMs: 30_000, cacheSize: 200_000 });
  const stopping = new AbortController();
  let consumer: ConsumerHandle | null = null;
  let advanceTimer: NodeJS.Timeout | null = null;

  const events = new Counter({
    name: 'recsys_features_events_total',
    help: 'events seen by the feature consumer, by outcome (applied, redelivered, duplicate)',
    labelNames: ['outcome'],
    registers: [metrics],
  });
  const byOutcome = {
    [APPLIED]: events.labels(OUTCOMES[APPLIED]),
    [REDELIVERED]: events.labels(OUTCOMES[REDELIVERED]),
    [DUPLICATE]: events.labels(OUTCOMES[DUPLICATE]),
  };
  const unknownItems = new Counter({
    name: 'recsys_features_unknown_item_events_total',
    help: 'events for items missing from the catalog (counted, no category affinity)',
    registers: [metrics],
  });

  const forever = retryForever(log, stopping.signal);

  // Trending counts per partition, waiting for the next flush. Aggregating a second of events
  // (instead of one chunk) cut the sorted-set writes, which were a third of Redis's time per
  // event in bench:stream; the offsets are committed after the flush, so a crash replays the
  // records and trending's per-partition offset guard counts each once.
  interface Pending {
    topic: string;
    partition: number;
    records: TrendingRecord[];
    /** Last offset handled since the last flush (null: nothing new). */
    lastOffset: string | null;
    commit: (next: string) => void;
  }
  const pending = new Map<string, Pending>();
  const pendingOf = (topic: string, partition: number): Pending => {
    const key = `${topic}|${partition}`;
    let p = pending.get(key);
    if (!p) {
      // Not assigned through the loop (cannot happen in order); counted, never committed.
      p = { topic, partition, records: [], lastOffset: null, commit: () => undefined };
      pending.set(key, p);
    }
    return p;
  };
  let flushing: Promise<void> = Promise.resolve();
  let flushTimer: NodeJS.Timeout | null = null;
  const flushTrending = (): Promise<void> => {
    flushing = flushing.then(async () => {
      for (const p of [...pending.values()]) {
        if (p.lastOffset === null) continue;
        const records = p.records;
        const last = p.lastOffset;
        p.records = [];
        p.lastOffset = null;
        try {
          await trending.apply(p.topic, p.partition, records);
          p.commit((BigInt(last) + 1n).toString());
        } catch (err) {
          // Put them back in front; the offsets stay uncommitted until a flush succeeds.
          p.records = records.concat(p.records);
          p.lastOffset ??= last;
          log.warn(
            { err: (err as Error).message, partition: p.partition },
            'trending flush failed',
          );
        }
      }
    });
    return flushing;
  };

  const ready = (async () => {
    await forever('kafka topics', () => ensureTopics(kafka, config.kafka, log));
    await forever('kafka producer connect', () => producer.connect());
    const deadLetter: DeadLetter = await forever('dlq schema', () =>
      createDeadLetter(config, producer),
    );
    const tuning = config.consumer;
    consumer = startConsumer<UserEvent>({
      kafka,
      groupId: tuning.groups.features,
      topics: [config.kafka.topics.events],
      decoder: createDecoder<UserEvent>(config.registry.url),
      log,
      metrics: consumerMetrics(metrics),
      tuning,
      undecodable: (bad) => deadLetter(bad.map((r) => undecodableToDlq(r))),
      handle: async (records, chunk) => {
        if (records.length > 0) {
          const items = await catalog.get(records.map((r) => r.value.itemId));
          const batch: FeatureEvent[] = records.map((r) => {
            const e = r.value;
            const category = items.get(e.itemId)?.categoryL1 ?? null;
            return {
              userId: e.userId,
              eventId: e.eventId,
              itemId: e.itemId,
              type: e.type,
              ts: e.ts,
              sessionId: e.sessionId,
              category,
              partition: r.partition,
              offset: r.offset,
            };
          });
          const statuses = await features.apply(batch);
          let unknown = 0;
          batch.forEach((e, i) => {
            byOutcome[statuses[i] as 0 | 1 | 2].inc();
            if (e.category === null && statuses[i] === APPLIED) unknown += 1;
          });
          if (unknown > 0) unknownItems.inc(unknown);
          // Re-sent duplicates are not trending; redelivered records are (trending skips
          // those it already counted itself, by offset).
          const p = pendingOf(chunk.topic, chunk.partition);
          for (let i = 0; i < batch.length; i++) {
            if (statuses[i] === DUPLICATE) continue;
            const e = batch[i] as FeatureEvent;
            p.records.push({ itemId: e.itemId, category: e.category, ts: e.ts, offset: e.offset });
          }
        }
        const p = pendingOf(chunk.topic, chunk.partition);
        p.lastOffset = chunk.lastOffset;
        // Bounded memory: a partition far ahead of the timer flushes now.
        if (p.records.length >= TRENDING_MAX_PENDING) await flushTrending();
      },
      // Features are applied (and published) per chunk; the offsets wait for the trending
      // counts of their records, which go to Redis once a second (see flushTrending).
      deferred: {
        revoked: () => pending.clear(),
        assigned: async (topic, partition, _offset, commit) => {
          pending.set(`${topic}|${partition}`, {
            topic,
            partition,
            records: [],
            lastOffset: null,
            commit,
          });
        },
        drain: () => flushTrending(),
      },
    });
    flushTimer = setInterval(() => {
      flushTrending().catch(() => undefined);
    }, TRENDING_FLUSH_MS);
    flushTimer.unref();
    const width = (Math.min(...config.trending.windowsSec) * 1000) / config.trending.buckets;
    advanceTimer = setInterval(
      () => {
        trending
          .advance()
          .catch((err: Error) => log.warn({ err: err.message }, 'trending advance failed'));
      },
      Math.max(1000, Math.min(10_000, width / 2)),
    );
    advanceTimer.unref();
    await consumer.ready;
    log.info({ group: tuning.groups.features }, 'feature consumer ready');
  })();
  ready.catch(() => undefined);

  const failed = consumerFailure(ready, () => consumer);

  return {
    ready,
    failed,
    readiness: kafkaRedisReadiness(config, kafka, redis, () => consumer),
    async stop() {
      stopping.abort(new Error('stopping'));
      if (advanceTimer) clearInterval(advanceTimer);
      if (flushTimer) clearInterval(flushTimer);
      await ready.catch(() => undefined);
      await consumer?.stop();
      await producer.disconnect().catch(() => undefined);
      redis.disconnect();
      log.info('feature consumer stopped');
    },
  };
}
