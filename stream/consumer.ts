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
 *      took the partition away); decode, and check each value (`records`: the topic's schema by
 *      name, and its contract); call `handle` (`poison.ts`): retriable failures are retried for
 *      as long as it takes while heartbeating, so a Redis or Elasticsearch outage pauses the
 *      partition instead of losing the group membership or the records, and records that keep
 *      failing for another reason are found by splitting the chunk and dead-lettered;
 *   3. resolve the chunk's last offset and heartbeat; kafkajs commits resolved offsets every
 *      `commitIntervalMs` and on rebalance, never beyond what was resolved.
 * A record that does not decode, is of another schema or breaks the contract goes to `rejected`
 * (the role's DLQ) and is skipped.
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
import type { Decoder } from '../schemas/index.js';
import type { ConsumerMetrics } from './consumer-metrics.js';
import { committedReader, DeferredOffsets, type DeferredCommit } from './deferred-offsets.js';
import { startLagPoller, type LagPoller } from './lag-poller.js';
import { decodeSlice } from './decode-chunk.js';
import { applyChunk } from './poison.js';
import type { ChunkEnd, ConsumedRecord, RecordRule, RejectedRecord } from './records.js';

export type { ChunkEnd, ConsumedRecord, RecordRule, RejectedRecord } from './records.js';

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
  /** Attempts a single failing record gets before it is dead-lettered. @default 3 */
  poisonAttempts?: number;
  /** Attempts of a chunk failing with Redis OOM or an unknown error before it is split. @default 30 */
  oomAttempts?: number;
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
   * Makes the chunk's effect durable; resolve only when it is. Throw to be called again: a
   * retriable error with the same records, any other with part of them (`poison.ts`), or a
   * `PartialChunkError` naming the records that failed. `chunk` names the part's partition and
   * last offset (rejected records included).
   */
  handle: (records: ConsumedRecord<T>[], chunk: ChunkEnd) => Promise<void>;
  /**
   * Dead-letters records that are not handed to `handle` (undecodable, of another schema,
   * breaking the contract) or that `handle` gave up on; retried until it succeeds.
   */
  rejected: (records: RejectedRecord[]) => Promise<void>;
  /** Per topic, what its values must be (decoded values only). @default none: any schema */
  records?: ReadonlyMap<string, RecordRule<T>>;
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

  let rejoining: Promise<void> | null = null;
  /** Leaves the group and joins it again (a deferred role's commits keep failing). */
  const rejoin = (): void => {
    if (rejoining || stopping.signal.aborted) return;
    metrics.rejoins.inc(g);
    clog.warn('commits keep failing; leaving the group to find its coordinator again');
    rejoining = (async () => {
      await ready;
      // Disconnecting emits STOP, not a rebalance: forget the partitions here.
      offsets?.revoke();
      await consumer?.disconnect().catch(() => undefined);
      await start();
    })().finally(() => {
      rejoining = null;
    });
  };
  // Deferred mode reads the group's committed offsets at each assignment (deferred-offsets.ts).
  const committed = deferred ? committedReader(kafka, groupId) : null;
  const offsets =
    deferred && committed
      ? new DeferredOffsets(deferred, clog, tuning.commitIntervalMs, {
          committed: committed.read,
          rejoin,
        })
      : null;
  const inBatch = new Set<Promise<void>>();
  const durably = durableRetry(
    stopping.signal,
    clog,
    () => metrics.handleFailures.inc(g),
    (yes) => {
      stuck = yes;
    },
  );

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
      setStuck: (yes) => (stuck = yes),
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

  const start = (): Promise<void> =>
    untilRunning(run, () => consumer?.disconnect(), stopping.signal, clog, topics);
  const ready = start();
  ready.catch(() => undefined);

  return {
    ready,
    failed,
    healthy: () => joined && !stuck,
    async stop() {
      stopping.abort(new Error('consumer stopping'));
      await lagPoller.stop();
      await ready.catch(() => undefined);
      await rejoining?.catch(() => undefined);
      if (offsets && deferred) {
        await Promise.all(inBatch);
        await deferred.drain();
        await offsets.close();
      }
      // kafkajs waits for the batch in hand, commits resolved offsets and leaves the group.
      await consumer?.disconnect();
      await committed?.close();
    },
  };
}

/** Runs `run` (creating the kafkajs consumer) until it succeeds or `signal` aborts. */
async function untilRunning(
  run: () => Promise<void>,
  disconnect: () => Promise<void> | undefined,
  signal: AbortSignal,
  clog: Logger,
  topics: string[],
): Promise<void> {
  for (;;) {
    if (signal.aborted) return;
    try {
      await run();
      clog.info({ topics }, 'consuming');
      return;
    } catch (err) {
      if (signal.aborted) return;
      clog.warn({ err: (err as Error).message }, 'consumer start failed; retrying');
      await disconnect()?.catch(() => undefined);
      await sleep(1000, signal).catch(() => undefined);
    }
  }
}

/** Retries `fn` until it succeeds, the consumer stops, or the error is not retriable. */
function durableRetry(
  signal: AbortSignal,
  clog: Logger,
  failure: () => void,
  setStuck: (stuck: boolean) => void,
): Durably {
  return async (what, fn, heartbeat) => {
    try {
      await retry(fn, {
        attempts: Number.POSITIVE_INFINITY,
        initialDelayMs: 100,
        maxDelayMs: 5000,
        signal,
        onRetry: (err, attempt, delayMs) => {
          setStuck(true);
          failure();
          clog.warn({ err: (err as Error).message, attempt, delayMs }, `${what} failed; retrying`);
          // Keep the group membership while the dependency is away.
          void heartbeat().catch(() => undefined);
        },
      });
    } finally {
      setStuck(false);
    }
  };
}

/** Retries a step until it succeeds or the consumer stops, heartbeating meanwhile. */
type Durably = (
  what: string,
  fn: () => Promise<void>,
  heartbeat: () => Promise<void>,
) => Promise<void>;

/**
 * The loop over one fetched batch: chunks of `chunkSize` records are decoded and checked,
 * rejected ones dead-lettered, the rest made durable by the role (`applyChunk`: poison records
 * are found and dead-lettered); each chunk's offset is resolved once its effect is durable (and
 * not at all when the partition was revoked meanwhile).
 */
function batchHandler<T>(loop: {
  options: ConsumerOptions<T>;
  clog: Logger;
  durably: Durably;
  signal: AbortSignal;
  offsets: DeferredOffsets | null;
  lagPoller: LagPoller;
  setStuck: (stuck: boolean) => void;
}): (payload: EachBatchPayload) => Promise<void> {
  const { options, clog, durably, signal, offsets, lagPoller, setStuck } = loop;
  const { groupId, decoder, handle, rejected, metrics, tuning, deferred } = options;
  const g = { group: groupId };
  const chunkTimer = metrics.chunkSeconds.labels(g);
  const chunkSize = metrics.chunkRecords.labels(g);
  const age = metrics.ageSeconds.labels(g);
  const recordsDone = metrics.records.labels(g);
  const policy = {
    recordAttempts: tuning.poisonAttempts ?? 3,
    boundedAttempts: tuning.oomAttempts ?? 30,
  };
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
    const reject = (bad: RejectedRecord[]): Promise<void> =>
      durably('dead-lettering', () => rejected(bad), heartbeat);
    for (let i = 0; i < messages.length; i += tuning.chunkSize) {
      if (!isRunning() || isStale() || signal.aborted || at !== assignment()) return;
      const slice = messages.slice(i, i + tuning.chunkSize);
      const t0 = performance.now();
      if (decoder) {
        await durably('schema fetch', () => decoder.prepare(slice.map((m) => m.value)), heartbeat);
      }
      const { good, bad } = decodeSlice(slice, decoder, topic, partition, options.records);
      if (bad.length > 0) {
        await reject(bad);
        const undecodable = bad.filter((b) => b.reason === 'undecodable').length;
        if (undecodable > 0) metrics.undecodable.inc(g, undecodable);
        clog.warn(
          { topic, partition, count: bad.length, reason: bad[0]?.reason, err: bad[0]?.detail },
          'records rejected and dead-lettered',
        );
      }
      const last = slice[slice.length - 1] as KafkaMessage;
      if (good.length > 0 || deferred) {
        const chunk = { topic, partition, lastOffset: last.offset };
        try {
          await applyChunk(
            {
              handle,
              reject: async (given) => {
                await reject(given);
                for (const r of given) {
                  const { offset, reason, detail } = r;
                  clog.error(
                    { topic, partition, offset, reason, err: detail },
                    'record dead-lettered',
                  );
                }
              },
              policy,
              signal,
              deferred: Boolean(deferred),
              onFailure: (err, errorClass, records, willRetry) => {
                setStuck(true);
                metrics.handleFailures.inc(g);
                const next = willRetry ? 'retrying' : 'giving this part up';
                clog.warn(
                  { err: (err as Error).message, errorClass, records, topic, partition },
                  `handle failed; ${next}`,
                );
              },
              // Keep the group membership while the dependency is away.
              onWait: () => void heartbeat().catch(() => undefined),
            },
            good,
            chunk,
          );
        } finally {
          setStuck(false);
        }
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
