/**
 * The loop every stateful consumer (session features, Elasticsearch indexer, lake sink) runs on:
 * its own consumer group, Avro values decoded with the writer schema, records handed to the
 * role in chunks, and offsets resolved only after the role's `handle` resolved, i.e. after its
 * side effect is durable. Together with effects keyed by eventId (or by topic-partition-offset)
 * this is at-least-once delivery with exactly-once effect.
 *
 * Steps for one fetched batch of one partition:
 *   1. split it into chunks of `chunkSize` records;
 *   2. for each chunk: stop if the consumer is stopping or the batch went stale (a rebalance
 *      took the partition away); decode; call `handle`, retrying retriable failures for as long
 *      as it takes while heartbeating, so a Redis or Elasticsearch outage pauses the partition
 *      instead of losing the group membership or the records;
 *   3. resolve the chunk's last offset and heartbeat; kafkajs commits resolved offsets every
 *      `commitIntervalMs` and on rebalance, never beyond what was resolved.
 * A record whose value cannot be decoded goes to `undecodable` (the role's DLQ) and is skipped.
 *
 * A role whose effect becomes durable only later than `handle` (the lake sink seals a file every
 * `rollMs`) passes `deferred` and commits by itself; see {@link DeferredCommit}.
 *
 * @example
 *   const consumer = startConsumer({ kafka, groupId: 'recsys-features', topics: [events],
 *     decoder, handle: (records) => store.apply(records), log, metrics, tuning });
 *   await consumer.stop();
 */
import type { Consumer, EachBatchPayload, Kafka, KafkaMessage } from 'kafkajs';
import { type Logger, retry, sleep } from '../core/index.js';
import { UndecodableError, type Decoder } from '../schemas/index.js';
import type { ConsumerMetrics } from './consumer-metrics.js';
import { DeferredOffsets, type DeferredCommit } from './deferred-offsets.js';
import { startLagPoller, type LagPoller } from './lag-poller.js';

/** One decoded record, with where it came from (the identity of its side effects). */
export interface ConsumedRecord<T> {
  topic: string;
  partition: number;
  /** Kafka offset, as kafkajs gives it (a decimal string; offsets pass 2^53 in theory). */
  offset: string;
  key: string | null;
  value: T;
  /** Kafka record timestamp, epoch ms. */
  timestamp: number;
}

/** Where a chunk ends: its partition and last offset, whether or not that record decoded. */
export interface ChunkEnd {
  topic: string;
  partition: number;
  lastOffset: string;
}

/** A record whose value did not decode, for the role to dead-letter. */
export interface UndecodableRecord {
  topic: string;
  partition: number;
  offset: string;
  message: KafkaMessage;
  error: UndecodableError;
}

export interface ConsumerTuning {
  /** Longest the broker holds a fetch when fewer than `minBytes` are there, ms. */
  maxWaitMs: number;
  /** Bytes the broker waits for before answering a fetch (1 = answer at once). */
  minBytes: number;
  /** Records handed to `handle` at once (one Redis pipeline, one bulk request, ...). */
  chunkSize: number;
  /** Partitions processed at the same time by this process. */
  concurrency: number;
  /** How often resolved offsets are committed, ms. */
  commitIntervalMs: number;
  /** Group session timeout, ms; `handle` heartbeats while it retries. */
  sessionTimeoutMs: number;
  /**
   * How often lag is read from Kafka whether or not records arrive, ms (`lag-poller.ts`); 0 reads
   * it only as records are resolved. @default 0
   */
  lagPollMs?: number;
}

export interface ConsumerOptions<T> {
  kafka: Kafka;
  groupId: string;
  topics: string[];
  /** Where a new group starts. @default true (the whole retained log) */
  fromBeginning?: boolean;
  /** One decoder per value schema family; `null` hands raw bytes through untouched. */
  decoder: Decoder<T> | null;
  /**
   * Makes the chunk's effect durable; resolve only when it is. Throw to retry. `chunk` names the
   * chunk's partition and last offset (undecodable records included).
   */
  handle: (records: ConsumedRecord<T>[], chunk: ChunkEnd) => Promise<void>;
  /** Dead-letters a record that cannot be decoded; retried like `handle`. */
  undecodable: (records: UndecodableRecord[]) => Promise<void>;
  log: Logger;
  metrics: ConsumerMetrics;
  tuning: ConsumerTuning;
  /** For a role that commits later than `handle` resolves. @default undefined (commit on resolve) */
  deferred?: DeferredCommit;
}

/**
 * For a role whose effect becomes durable only after `handle` returned (the lake sink seals a
 * Parquet file every `rollMs`; holding `handle` until then would stall the partition). The loop
 * moves past a chunk once `handle` took it, and commits only what the role passes to `commit`.
 * kafkajs fetches from the last resolved offset, so resolving cannot wait for the role: in this
 * mode kafkajs' auto-commit is off and the loop commits by hand. `handle` is then called for
 * every chunk, also one with no decodable record, so the role sees every offset.
 *
 * A rebalance takes every partition away (kafkajs' eager protocol): `revoked` runs, and each
 * partition is then given to `assigned` again, with the offset consumption restarts at, before
 * its first chunk. Releases of an earlier assignment are dropped, never committed.
 */
export interface ConsumerHandle {
  /** Resolves once the consumer joined its group and runs. */
  ready: Promise<void>;
  /** True while the group membership is held and no handler is stuck retrying. */
  healthy(): boolean;
  /** Rejects when the consumer hit an error no retry can fix (a programming error). */
  failed: Promise<never>;
  /** Finishes the chunk in hand, commits what was resolved and leaves the group. */
  stop(): Promise<void>;
}

/** Metrics of all consumers in one process, labelled by group. Create once per registry. */
export function startConsumer<T>(options: ConsumerOptions<T>): ConsumerHandle {
  const { kafka, groupId, topics, log, metrics, tuning } = options;
  const { deferred } = options;
  const clog = log.child({ component: 'consumer', group: groupId });
  const stopping = new AbortController();
  let consumer = null as Consumer | null;
  let joined = false;
  let stuck = false;
  let fail: (err: Error) => void = () => undefined;
  const failed = new Promise<never>((_, reject) => {
    fail = reject;
  });
  // A rejection nobody awaits yet must not crash the process before main attaches its handler.
  failed.catch(() => undefined);

  const g = { group: groupId };
  const lagPoller = startLagPoller({
    kafka,
    groupId,
    gauge: metrics.lag,
    intervalMs: tuning.lagPollMs ?? 0,
    log: clog,
  });

  const offsets = deferred ? new DeferredOffsets(deferred, clog, tuning.commitIntervalMs) : null;
  const inBatch = new Set<Promise<void>>();
  /** Retries `fn` until it succeeds, the consumer stops, or the error is not retriable. */
  const durably = async (what: string, fn: () => Promise<void>, heartbeat: () => Promise<void>) => {
    try {
      await retry(fn, {
        attempts: Number.POSITIVE_INFINITY,
        initialDelayMs: 100,
        maxDelayMs: 5000,
        signal: stopping.signal,
        onRetry: (err, attempt, delayMs) => {
          stuck = true;
          metrics.handleFailures.inc(g);
          clog.warn({ err: (err as Error).message, attempt, delayMs }, `${what} failed; retrying`);
          // Keep the group membership while the dependency is away.
          void heartbeat().catch(() => undefined);
        },
      });
    } finally {
      stuck = false;
    }
  };

  const run = async (): Promise<void> => {
    consumer = kafka.consumer({
      groupId,
      allowAutoTopicCreation: false,
      maxWaitTimeInMs: tuning.maxWaitMs,
      minBytes: tuning.minBytes,
      sessionTimeout: tuning.sessionTimeoutMs,
      heartbeatInterval: Math.max(100, Math.floor(tuning.sessionTimeoutMs / 10)),
      // kafkajs retries a failing fetch/commit itself; after that the consumer crashes and,
      // for retriable errors, restarts (the `crash` event below logs it).
      retry: { initialRetryTime: 200, maxRetryTime: 5000, retries: 10 },
    });
    const c = consumer;
    c.on(c.events.GROUP_JOIN, (e) => {
      joined = true;
      lagPoller.assign(e.payload.memberAssignment);
      clog.info({ assignment: e.payload.memberAssignment }, 'joined group');
    });
    c.on(c.events.CRASH, (e) => {
      joined = false;
      clog.error({ err: e.payload.error.message, restart: e.payload.restart }, 'consumer crashed');
      if (!e.payload.restart && !stopping.signal.aborted) fail(e.payload.error);
    });
    c.on(c.events.STOP, () => {
      joined = false;
    });
    if (offsets) {
      offsets.consumer = c;
      for (const event of [c.events.REBALANCING, c.events.GROUP_JOIN, c.events.CRASH]) {
        c.on(event, () => offsets.revoke());
      }
    }
    await c.connect();
    await c.subscribe({ topics, fromBeginning: options.fromBeginning ?? true });
    const eachBatch = batchHandler({
      options,
      clog,
      durably,
      signal: stopping.signal,
      offsets,
      lagPoller,
    });
    await c.run({
      autoCommit: !deferred,
      autoCommitInterval: tuning.commitIntervalMs,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: tuning.concurrency,
      // Deferred mode: `stop()` waits for the batches in hand before it drains the role.
      eachBatch: !deferred
        ? eachBatch
        : (payload) => {
            const running = eachBatch(payload);
            const tracked = running.catch(() => undefined);
            inBatch.add(tracked);
            void tracked.then(() => inBatch.delete(tracked));
            return running;
          },
    });
  };

  const ready = (async () => {
    for (;;) {
      try {
        await run();
        clog.info({ topics }, 'consuming');
        return;
      } catch (err) {
        if (stopping.signal.aborted) return;
        clog.warn({ err: (err as Error).message }, 'consumer start failed; retrying');
        await consumer?.disconnect().catch(() => undefined);
        await sleep(1000, stopping.signal).catch(() => undefined);
      }
    }
  })();
  ready.catch(() => undefined);

  return {
    ready,
    failed,
    healthy: () => joined && !stuck,
    async stop() {
      stopping.abort(new Error('consumer stopping'));
      await lagPoller.stop();
      await ready.catch(() => undefined);
      if (offsets && deferred) {
        await Promise.all(inBatch);
        await deferred.drain();
        await offsets.close();
      }
      // kafkajs waits for the batch in hand, commits resolved offsets and leaves the group.
      await consumer?.disconnect();
    },
  };
}

/** Retries a step until it succeeds or the consumer stops, heartbeating meanwhile. */
type Durably = (
  what: string,
  fn: () => Promise<void>,
  heartbeat: () => Promise<void>,
) => Promise<void>;

/**
 * The loop over one fetched batch: chunks of `chunkSize` records are decoded, undecodable ones
 * dead-lettered, the rest handed to the role; each chunk's offset is resolved once its effect
 * is durable (and not at all when the partition was revoked meanwhile).
 */
function batchHandler<T>(loop: {
  options: ConsumerOptions<T>;
  clog: Logger;
  durably: Durably;
  signal: AbortSignal;
  offsets: DeferredOffsets | null;
  lagPoller: LagPoller;
}): (payload: EachBatchPayload) => Promise<void> {
  const { options, clog, durably, signal, offsets, lagPoller } = loop;
  const { groupId, decoder, handle, undecodable, metrics, tuning, deferred } = options;
  const g = { group: groupId };
  const chunkTimer = metrics.chunkSeconds.labels(g);
  const chunkSize = metrics.chunkRecords.labels(g);
  const age = metrics.ageSeconds.labels(g);
  const recordsDone = metrics.records.labels(g);
  const assignment = (): number => offsets?.assignment ?? 0;
  return async (payload: EachBatchPayload): Promise<void> => {
    const { batch, resolveOffset, heartbeat, isRunning, isStale } = payload;
    const { topic, partition, messages } = batch;
    if (
      offsets &&
      (signal.aborted || !(await offsets.assign(batch, (what, fn) => durably(what, fn, heartbeat))))
    ) {
      return;
    }
    const at = assignment();
    const lag = metrics.lag.labels({ group: groupId, topic, partition: String(partition) });
    const high = Number(batch.highWatermark);
    for (let i = 0; i < messages.length; i += tuning.chunkSize) {
      if (!isRunning() || isStale() || signal.aborted || at !== assignment()) return;
      const slice = messages.slice(i, i + tuning.chunkSize);
      const t0 = performance.now();
      if (decoder) {
        await durably('schema fetch', () => decoder.prepare(slice.map((m) => m.value)), heartbeat);
      }
      const { good, bad } = decodeSlice(slice, decoder, topic, partition);
      if (bad.length > 0) {
        await durably('dead-lettering', () => undecodable(bad), heartbeat);
        metrics.undecodable.inc(g, bad.length);
        clog.warn(
          { topic, partition, count: bad.length, err: bad[0]?.error.message },
          'undecodable records dead-lettered',
        );
      }
      const last = slice[slice.length - 1] as KafkaMessage;
      if (good.length > 0 || deferred) {
        const chunk = { topic, partition, lastOffset: last.offset };
        await durably('handle', () => handle(good, chunk), heartbeat);
      }
      // Revoked while the role worked: the next assignment starts from the committed offset.
      if (at !== assignment()) return;
      resolveOffset(last.offset);
      lagPoller.resolved(topic, partition, last.offset);
      const now = Date.now();
      chunkTimer.observe((performance.now() - t0) / 1000);
      chunkSize.observe(slice.length);
      recordsDone.inc(good.length);
      for (const r of good) age.observe(Math.max(0, now - r.timestamp) / 1000);
      lag.set(Math.max(0, high - Number(last.offset) - 1));
      await heartbeat();
    }
  };
}

/** Decodes a chunk's messages; values that are not of a known schema come back as `bad`. */
function decodeSlice<T>(
  slice: KafkaMessage[],
  decoder: Decoder<T> | null,
  topic: string,
  partition: number,
): { good: ConsumedRecord<T>[]; bad: UndecodableRecord[] } {
  const good: ConsumedRecord<T>[] = [];
  const bad: UndecodableRecord[] = [];
  for (const m of slice) {
    try {
      const value = decoder ? decoder.decode(m.value) : (m.value as T);
      good.push({
        topic,
        partition,
        offset: m.offset,
        key: m.key ? m.key.toString() : null,
        value,
        timestamp: Number(m.timestamp),
      });
    } catch (err) {
      if (!(err instanceof UndecodableError)) throw err;
      bad.push({ topic, partition, offset: m.offset, message: m, error: err });
    }
  }
  return { good, bad };
}
