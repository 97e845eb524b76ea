/**
 * Training rows from the served log: the feeds whose records carry their candidates with the
 * features as served (`serving/feed/feature-log.ts`), each labelled with what its user did
 * next. Rows built this way are the server's own, so the reranker learns on exactly the
 * candidate mix and feature values it will score (the batch's rebuilt queries only approximate
 * the server's state at request time: `rerank.ts`).
 *
 * Steps:
 *   1. The user's events from the ETL (`events.parquet`), by the time the bridge received them
 *      (`received_ms`), the server's clock like a feed's `ts`.
 *   2. The served topic, from the records of the last `lookbackMs` (by Kafka's timestamps) up
 *      to the end offsets taken when the read starts (a throwaway consumer group, deleted after).
 *      Records of one user share a partition, so they arrive in serving order.
 *   3. A logged feed's labels: per candidate, the best grade (`relevance`) of the user's events
 *      on it received after the feed and up to the user's next served feed (logged or not), at
 *      most `windowMs` later. Feeds without a relevant candidate teach LambdaRank nothing and are
 *      dropped; so are feeds logged with other feature names than today's.
 *   4. Split by time: the newest `evalShare` of the labelled feeds are held out.
 *
 * @example
 *   const logged = await readLoggedFeeds(config, log, etl.paths.events, { windowMs: 1_800_000 });
 *   if (logged.train.length >= 500) trainOn(logged.train);
 */
import { randomUUID } from 'node:crypto';
import type { Config, Logger } from '../core/index.js';
import { createDecoder, type EventType, type ServedFeed } from '../schemas/index.js';
import { createKafka } from '../stream/kafka.js';
import { loggedMatrix } from '../serving/feed/feature-log.js';
import { FEATURE_NAMES } from '../serving/rank-features.js';
import { openBatchDb, sqlString } from './duck.js';
import { relevance } from './training-data.js';

/** One logged feed with its labels. */
export interface LoggedGroup {
  /** The feed's requestId. */
  key: string;
  userId: string;
  ts: number;
  /** The candidates, in the order of the feature rows. */
  ids: string[];
  features: Float32Array;
  labels: Uint8Array;
}

export interface LoggedFeeds {
  train: LoggedGroup[];
  eval: LoggedGroup[];
  counts: {
    /** Served records read, those with logged candidates, and those kept (labelled). */
    served: number;
    logged: number;
    labelled: number;
    /** Logged with feature names other than today's (a feature change since), or malformed. */
    otherFeatures: number;
  };
}

export interface LoggedOptions {
  /** Events after a feed count for it at most this long, ms. */
  windowMs: number;
  /** Share of the labelled feeds (the newest) held out. @default 0.25 */
  evalShare?: number;
  /** Labelled feeds kept at most (the newest); bounds memory (about 22 KB each). @default 40000 */
  maxGroups?: number;
  /** Gives up reading the served topic after this long, ms. @default 600000 */
  timeoutMs?: number;
  /** Reads the served records of this long before now, ms. @default 7 days */
  lookbackMs?: number;
}

interface UserEvents {
  at: Float64Array;
  items: string[];
  types: EventType[];
}

export async function readLoggedFeeds(
  config: Readonly<Config>,
  log: Logger,
  eventsParquet: string,
  options: LoggedOptions,
): Promise<LoggedFeeds> {
  const since = Date.now() - (options.lookbackMs ?? 7 * 86_400_000);
  const events = await eventsByUser(eventsParquet, since);
  const maxGroups = options.maxGroups ?? 40_000;
  const labelled: LoggedGroup[] = [];
  const counts = { served: 0, logged: 0, labelled: 0, otherFeatures: 0 };
  const pending = new Map<string, { feed: ServedFeed; features: Float32Array }>();
  const today = FEATURE_NAMES.join(',');
  const recent = new RecentIds(100_000);

  const settle = (p: { feed: ServedFeed; features: Float32Array }, until: number): void => {
    const { feed, features } = p;
    const ids = feed.candidates?.itemIds ?? [];
    const labels = labelsOf(events.get(feed.userId), ids, feed.ts, until);
    if (!labels) return;
    counts.labelled++;
    labelled.push({ key: feed.requestId, userId: feed.userId, ts: feed.ts, ids, features, labels });
    // Past the bound (with some slack, to sort rarely), only the newest feeds stay.
    if (labelled.length > maxGroups * 1.25) newest(labelled, maxGroups);
  };
  await readServed(config, log, since, options.timeoutMs ?? 600_000, (feed) => {
    // The served log is at least once (a produce retried after a leader change writes its batch
    // again, right after): a record seen among the recent ones is the same feed.
    if (!recent.add(feed.requestId)) return;
    counts.served++;
    const before = pending.get(feed.userId);
    if (before) {
      pending.delete(feed.userId);
      const next = feed.ts > before.feed.ts ? feed.ts : before.feed.ts + options.windowMs;
      settle(before, Math.min(next, before.feed.ts + options.windowMs));
    }
    if (!feed.candidates) return;
    counts.logged++;
    const features =
      feed.candidates.featureNames.join(',') === today && loggedMatrix(feed.candidates);
    if (!features) {
      counts.otherFeatures++;
      return;
    }
    pending.set(feed.userId, { feed, features });
  });
  for (const p of pending.values()) settle(p, p.feed.ts + options.windowMs);

  newest(labelled, maxGroups);
  const cut = Math.round(labelled.length * (1 - (options.evalShare ?? 0.25)));
  log.info(counts, 'logged feeds read');
  return { train: labelled.slice(0, cut), eval: labelled.slice(cut), counts };
}

/** The last `size` ids added: `add` is false for an id among them. */
class RecentIds {
  /** Oldest first (a Set keeps insertion order). */
  readonly #ids = new Set<string>();
  constructor(readonly size: number) {}

  add(id: string): boolean {
    if (this.#ids.has(id)) return false;
    if (this.#ids.size >= this.size) this.#ids.delete(this.#ids.values().next().value as string);
    this.#ids.add(id);
    return true;
  }
}

/** Sorts `groups` by time (ties by key) and keeps the newest `max`, in place. */
function newest(groups: LoggedGroup[], max: number): void {
  groups.sort((a, b) => a.ts - b.ts || (a.key < b.key ? -1 : 1));
  if (groups.length > max) groups.splice(0, groups.length - max);
}

/** Per candidate, the best grade of the user's events on it in (from, until]; null if none. */
export function labelsOf(
  ev: UserEvents | undefined,
  ids: readonly string[],
  from: number,
  until: number,
): Uint8Array | null {
  if (!ev) return null;
  // First event after `from` (binary search: events are sorted by receive time).
  let lo = 0;
  let hi = ev.at.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((ev.at[mid] as number) <= from) lo = mid + 1;
    else hi = mid;
  }
  const seen = new Map<string, EventType[]>();
  for (let i = lo; i < ev.at.length && (ev.at[i] as number) <= until; i++) {
    const item = ev.items[i] as string;
    seen.set(item, [...(seen.get(item) ?? []), ev.types[i] as EventType]);
  }
  if (seen.size === 0) return null;
  const labels = new Uint8Array(ids.length);
  let any = false;
  ids.forEach((id, r) => {
    const types = seen.get(id);
    if (!types) return;
    labels[r] = relevance(types);
    any ||= (labels[r] as number) > 0;
  });
  return any ? labels : null;
}

/** Step 1: every user's events received since `since` (epoch ms), by receive time. */
async function eventsByUser(
  eventsParquet: string,
  since: number,
): Promise<Map<string, UserEvents>> {
  const db = await openBatchDb();
  try {
    const rows = (
      await db.conn.runAndReadAll(
        `SELECT userId, itemId, type, received_ms FROM read_parquet(${sqlString(eventsParquet)})
         WHERE received_ms >= ${Math.floor(since)}
         ORDER BY userId, received_ms, eventId`,
      )
    ).getRowsJS() as [string, string, EventType, bigint | number][];
    const out = new Map<string, UserEvents>();
    let i = 0;
    while (i < rows.length) {
      const user = (rows[i] as (typeof rows)[number])[0];
      let j = i;
      while (j < rows.length && (rows[j] as (typeof rows)[number])[0] === user) j++;
      const slice = rows.slice(i, j);
      out.set(user, {
        at: Float64Array.from(slice, (r) => Number(r[3])),
        items: slice.map((r) => r[1]),
        types: slice.map((r) => r[2]),
      });
      i = j;
    }
    return out;
  } finally {
    db.close();
  }
}

/**
 * Step 2: every record of the served topic from `since` (epoch ms) up to the end offsets at the
 * start, in partition order, through `each`. Undecodable records are counted and skipped (the DLQ of the served
 * log is its producer's concern).
 */
async function readServed(
  config: Readonly<Config>,
  log: Logger,
  since: number,
  timeoutMs: number,
  each: (feed: ServedFeed) => void,
): Promise<void> {
  const topic = config.kafka.topics.served;
  const kafka = createKafka(config.kafka, log, 'batch-logged');
  const admin = kafka.admin();
  await admin.connect();
  const groupId = `${config.kafka.clientId}-batch-logged-${randomUUID().slice(0, 8)}`;
  const consumer = kafka.consumer({ groupId, allowAutoTopicCreation: false });
  try {
    const exists = (await admin.listTopics()).includes(topic);
    if (!exists) return;
    const ends = await admin.fetchTopicOffsets(topic);
    // The group starts where `since` falls in each partition (the end when nothing is newer).
    const starts = await admin.fetchTopicOffsetsByTimestamp(topic, since);
    const left = new Map<number, bigint>();
    const from: { partition: number; offset: string }[] = [];
    for (const p of ends) {
      const at = starts.find((s) => s.partition === p.partition)?.offset ?? p.low;
      const start = BigInt(at) < 0n ? BigInt(p.high) : BigInt(at);
      from.push({ partition: p.partition, offset: start.toString() });
      if (BigInt(p.high) > start) left.set(p.partition, BigInt(p.high));
    }
    if (left.size === 0) return;
    await admin.setOffsets({ groupId, topic, partitions: from });
    const decoder = createDecoder<ServedFeed>(config.registry.url);
    let undecodable = 0;
    /** Per partition, the last offset handled. */
    const done = new Map<number, bigint>();
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`served log not read within ${timeoutMs} ms`)),
        timeoutMs,
      );
      consumer
        .run({
          eachBatch: async ({ batch, resolveOffset }) => {
            const end = left.get(batch.partition);
            if (end === undefined) return;
            // A rebalance while joining can hand over a batch again: each offset counts once.
            const next = done.get(batch.partition) ?? -1n;
            await decoder.prepare(batch.messages.map((m) => m.value));
            for (const m of batch.messages) {
              if (BigInt(m.offset) >= end) break;
              if (BigInt(m.offset) <= next) continue;
              done.set(batch.partition, BigInt(m.offset));
              try {
                each(decoder.decode(m.value));
              } catch {
                undecodable++;
              }
              resolveOffset(m.offset);
              if (BigInt(m.offset) + 1n >= end) left.delete(batch.partition);
            }
            if (left.size === 0) {
              clearTimeout(timer);
              resolve();
            }
          },
        })
        .catch(reject);
    });
    if (undecodable > 0) log.warn({ undecodable }, 'served records not decodable, skipped');
  } finally {
    await consumer.disconnect().catch(() => undefined);
    await admin.deleteGroups([groupId]).catch(() => undefined);
    await admin.disconnect();
  }
}
