/**
 * The session-feature role: consumes `recsys.events.v1` in its own group and, per chunk of one
 * partition, looks up the items' categories and applies the events to the users' features (one
 * atomic script per user, `store/session-features.ts`; this is what the live feed waits for).
 * Trending counts (`store/trending.ts`) gather per partition and go to Redis once a second; a
 * partition's offsets are committed only after both its features and its trending counts are
 * in Redis (a crash replays the records, and trending's per-partition offset guard counts each
 * once). Each applied event also pairs its item with the user's previous items in the online
 * co-visitation lists (`store/online-neighbours.ts`); those pairs gather with the trending counts
 * and go to Redis in the same flush, summed per item and neighbour over the second (one script
 * per item a second instead of one per item and chunk). A timer retires trending buckets.
 *
 * @example
 *   const role = startFeatures({ config, log, metrics });
 *   await role.ready;
 */
import { Counter, type Registry } from 'prom-client';
import type { Logger, RoleDeps, StreamRole } from '../../core/index.js';
import type { UserEvent } from '../../schemas/index.js';
import { CatalogStore } from '../../store/catalog.js';
import { createRedis, redisHealth, redisMemoryMetrics } from '../../store/redis.js';
import {
  APPLIED,
  DUPLICATE,
  REDELIVERED,
  SessionFeatureStore,
  type ApplyStatus,
  type FeatureEvent,
} from '../../store/session-features.js';
import { coVisits, OnlineNeighbourStore, type CoVisit } from '../../store/online-neighbours.js';
import { TrendingStore, type TrendingRecord } from '../../store/trending.js';
import type { ChunkEnd, ConsumedRecord } from '../consumer.js';
import { PartialChunkError } from '../poison.js';
import { consumerRole } from './consumer-role.js';

/** How often trending counts go to Redis (and offsets get committed), ms. */
const TRENDING_FLUSH_MS = 1000;
/** Records a partition may hold for trending before it flushes at once. */
const TRENDING_MAX_PENDING = 50_000;

export function startFeatures(deps: RoleDeps): StreamRole {
  const { config, metrics } = deps;
  const redis = createRedis(config.redis.url, 'recsys-features');
  // The process that writes most to Redis reports its memory.
  redisMemoryMetrics(redis, metrics);
  const features = new SessionFeatureStore(redis, config.features);
  const trending = new TrendingStore(redis, config.trending);
  // As many neighbours per item as the batch keeps.
  const online = new OnlineNeighbourStore(redis, {
    maxNeighbours: config.batch.neighboursPerItem,
    window: config.features.coVisitWindow,
  });
  const catalog = new CatalogStore(redis, { cacheTtlMs: 30_000, cacheSize: 200_000 });
  const counts = featureMetrics(metrics);
  let buffer: CountBuffer | null = null;
  const timers: NodeJS.Timeout[] = [];

  /**
   * Applies a chunk's events to the users' features; returns what trending should count, the
   * co-visits of the applied events, and the records of users whose script failed.
   */
  const apply = async (records: ConsumedRecord<UserEvent>[]): Promise<Applied> => {
    const items = await catalog.get(records.map((r) => r.value.itemId));
    const batch: FeatureEvent[] = records.map((r) => {
      const e = r.value;
      return {
        userId: e.userId,
        eventId: e.eventId,
        itemId: e.itemId,
        type: e.type,
        ts: e.ts,
        sessionId: e.sessionId,
        category: items.get(e.itemId)?.categoryL1 ?? null,
        partition: r.partition,
        offset: r.offset,
        receivedAt: e.receivedAt,
      };
    });
    const prior = new Map<string, string[]>();
    const { statuses, failed } = await features.applyEach(batch, prior);
    counts.record(batch, statuses);
    // Co-visits of what was applied now: a chunk retried after this point sees its events as
    // redelivered, so a co-visit is counted at most once (unless a flush fails partway).
    const visits = coVisits(batch, (i) => statuses[i] === APPLIED, prior, online.window);
    // Re-sent duplicates are not trending; redelivered records are (trending skips those it
    // already counted itself, by offset).
    const out: TrendingRecord[] = [];
    batch.forEach((e, i) => {
      if (statuses[i] !== undefined && statuses[i] !== DUPLICATE) {
        out.push({ itemId: e.itemId, category: e.category, ts: e.ts, offset: e.offset });
      }
    });
    const failedRecords = [...failed.keys()].sort((a, b) => a - b).map((i) => records[i]);
    const error = failed.values().next().value;
    return { trending: out, visits, failed: failedRecords as ConsumedRecord<UserEvent>[], error };
  };

  return consumerRole<UserEvent>(deps, {
    role: 'features',
    label: 'feature consumer',
    groupId: config.consumer.groups.features,
    topics: [config.kafka.topics.events],
    open: async ({ log }) => {
      const countBuffer = new CountBuffer(trending, online, log);
      buffer = countBuffer;
      timers.push(setInterval(() => countBuffer.flush().catch(() => undefined), TRENDING_FLUSH_MS));
      const width = (Math.min(...config.trending.windowsSec) * 1000) / config.trending.buckets;
      timers.push(
        setInterval(
          () => {
            trending
              .advance()
              .catch((err: Error) => log.warn({ err: err.message }, 'trending advance failed'));
          },
          Math.max(1000, Math.min(10_000, width / 2)),
        ),
      );
      for (const t of timers) t.unref();
    },
    handle: () => async (records, chunk) => {
      const pending = records.length > 0 ? await apply(records) : NO_COUNTS;
      if (!pending.failed?.length) return buffer?.add(chunk, pending);
      // Some users' scripts failed (e.g. WRONGTYPE on one user's key): the others are applied
      // and counted now, the offsets stay until the loop has dealt with the failed records.
      await buffer?.add(chunk, pending, false);
      throw new PartialChunkError(pending.failed, pending.error);
    },
    // Features are applied (and published) per chunk; the offsets wait for the trending counts
    // and co-visits of their records (`CountBuffer`).
    deferred: () => ({
      revoked: () => buffer?.revoked(),
      assigned: async (topic, partition, _offset, commit) =>
        buffer?.assigned(topic, partition, commit),
      drain: async () => buffer?.flush(),
    }),
    checks: { redis: () => redisHealth(redis, config.healthTimeoutMs) },
    onStop: async () => {
      for (const t of timers) clearInterval(t);
      redis.disconnect();
    },
  });
}

/** Counters of events by outcome, and of events for items missing from the catalog. */
function featureMetrics(registry: Registry) {
  const events = new Counter({
    name: 'recsys_features_events_total',
    help: 'events seen by the feature consumer, by outcome (applied, redelivered, duplicate)',
    labelNames: ['outcome'],
    registers: [registry],
  });
  const byOutcome = {
    [APPLIED]: events.labels('applied'),
    [REDELIVERED]: events.labels('redelivered'),
    [DUPLICATE]: events.labels('duplicate'),
  };
  const unknownItems = new Counter({
    name: 'recsys_features_unknown_item_events_total',
    help: 'events for items missing from the catalog (counted, no category affinity)',
    registers: [registry],
  });
  return {
    record(batch: readonly FeatureEvent[], statuses: readonly (ApplyStatus | undefined)[]): void {
      let unknown = 0;
      batch.forEach((e, i) => {
        const status = statuses[i];
        if (status === undefined) return;
        byOutcome[status].inc();
        if (e.category === null && statuses[i] === APPLIED) unknown += 1;
      });
      if (unknown > 0) unknownItems.inc(unknown);
    },
  };
}

/** What a chunk leaves for the next flush. */
interface Counts {
  trending: TrendingRecord[];
  visits: CoVisit[];
}

/** {@link Counts} of a chunk, and the records whose users' scripts failed. */
interface Applied extends Counts {
  failed?: ConsumedRecord<UserEvent>[];
  error?: Error;
}

const NO_COUNTS: Applied = { trending: [], visits: [] };
const noop = (): void => undefined;

/** One partition's trending records and co-visits waiting for the next flush. */
interface Pending {
  topic: string;
  partition: number;
  records: TrendingRecord[];
  visits: CoVisit[];
  /** Last offset handled since the last flush (null: nothing new). */
  lastOffset: string | null;
  /**
   * Counts of a chunk part of which is still being retried: held back until the chunk is done,
   * so no flush moves trending's offset guard past a record that is still to be counted.
   */
  held: Counts;
  commit: (next: string) => void;
}

/**
 * Trending counts and co-visits per partition, aggregated over a second before they go to Redis
 * (fewer sorted-set writes than one flush per chunk); a partition's offsets are committed after
 * both are written.
 */
class CountBuffer {
  readonly #trending: TrendingStore;
  readonly #online: OnlineNeighbourStore;
  readonly #log: Logger;
  readonly #pending = new Map<string, Pending>();
  #flushing: Promise<void> = Promise.resolve();

  constructor(trending: TrendingStore, online: OnlineNeighbourStore, log: Logger) {
    this.#trending = trending;
    this.#online = online;
    this.#log = log;
  }

  revoked(): void {
    this.#pending.clear();
  }

  assigned(topic: string, partition: number, commit: (next: string) => void): void {
    this.#pending.set(`${topic}|${partition}`, {
      topic,
      partition,
      records: [],
      visits: [],
      lastOffset: null,
      held: NO_COUNTS,
      commit,
    });
  }

  /**
   * Adds a chunk's counts; `advance` false keeps the partition's offset (part of the chunk is
   * still to do). A partition far ahead of the timer flushes at once.
   */
  async add(chunk: ChunkEnd, counts: Counts, advance = true): Promise<void> {
    const key = `${chunk.topic}|${chunk.partition}`;
    let p = this.#pending.get(key);
    if (!p) {
      // Not assigned through the loop (cannot happen in order); counted, never committed.
      p = { ...chunk, records: [], visits: [], lastOffset: null, held: NO_COUNTS, commit: noop };
      this.#pending.set(key, p);
    }
    if (!advance) {
      p.held = {
        trending: p.held.trending.concat(counts.trending),
        visits: p.held.visits.concat(counts.visits),
      };
      return;
    }
    for (const r of p.held.trending.concat(counts.trending)) p.records.push(r);
    for (const v of p.held.visits.concat(counts.visits)) p.visits.push(v);
    p.held = NO_COUNTS;
    p.lastOffset = chunk.lastOffset;
    if (p.records.length + p.visits.length >= TRENDING_MAX_PENDING) await this.flush();
  }

  /**
   * Writes every partition's trending counts and then all co-visits (summed per item across
   * partitions), then commits the offsets; what failed stays for the next flush (trending
   * skips offsets it already counted).
   */
  flush(): Promise<void> {
    this.#flushing = this.#flushing.then(async () => {
      const taken: { p: Pending; records: TrendingRecord[]; visits: CoVisit[]; last: string }[] =
        [];
      for (const p of this.#pending.values()) {
        if (p.lastOffset === null) continue;
        taken.push({ p, records: p.records, visits: p.visits, last: p.lastOffset });
        p.records = [];
        p.visits = [];
        p.lastOffset = null;
      }
      const putBack = (t: (typeof taken)[number], err: unknown): void => {
        const { p } = t;
        p.records = t.records.concat(p.records);
        p.visits = t.visits.concat(p.visits);
        p.lastOffset ??= t.last;
        this.#log.warn({ err: (err as Error).message, partition: p.partition }, 'flush failed');
      };
      const written: typeof taken = [];
      for (const t of taken) {
        try {
          await this.#trending.apply(t.p.topic, t.p.partition, t.records);
          written.push(t);
        } catch (err) {
          putBack(t, err);
        }
      }
      try {
        await this.#online.record(written.flatMap((t) => t.visits));
      } catch (err) {
        for (const t of written) putBack(t, err);
        return;
      }
      for (const t of written) t.p.commit((BigInt(t.last) + 1n).toString());
    });
    return this.#flushing;
  }
}
