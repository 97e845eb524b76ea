/**
 * The served log: one `ServedFeed` Avro record per feed to `recsys.served.v1` (key = userId),
 * written off the request path. `write` only queues and never throws; a batcher
 * (`stream/producer.ts`, the one ingest uses) gathers records into few produce requests.
 *
 * The buffer is bounded: records waiting for Kafka (not yet connected, schema not yet
 * registered, or an outage while the batcher retries) count against `maxBuffered` records and
 * `maxBufferedBytes` (estimated by {@link servedBytes}: a feed logged with its candidates'
 * feature rows is some 40 times a plain one); beyond either a record is dropped and counted in
 * `recsys_served_log_dropped_total{reason}`. A feed is never held back or failed because of the
 * log; losing some of the log in a long outage is the accepted price (it feeds analytics,
 * impression fatigue and the reranker's training rows, not the user's answer).
 *
 * @example
 *   const served = startServedLog({ config, log, metrics });
 *   served.write(feed); // returns at once
 */
import { Counter, type Registry } from 'prom-client';
import { type Config, type Logger, retryForever } from '../core/index.js';
import {
  createEncoder,
  registerSchema,
  subjectsFor,
  type Encoder,
  type ServedFeed,
} from '../schemas/index.js';
import { KafkaBatcher } from '../stream/producer.js';
import { createKafka, createProducer, ensureTopics } from '../stream/kafka.js';

export interface ServedLog {
  /** Queues one record; never throws, never waits. */
  write(feed: ServedFeed): void;
  /** Ok once connected and the schema is registered, and while the last send did not fail. */
  check(): void;
  /** Waits until every record written so far was acknowledged or dropped. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

export interface ServedLogOptions {
  config: Readonly<Config>;
  log: Logger;
  metrics: Registry;
  /** Records waiting for Kafka at most; more are dropped. @default 10000 */
  maxBuffered?: number;
  /** Their estimated bytes at most ({@link servedBytes}); more are dropped. @default 64 MiB */
  maxBufferedBytes?: number;
}

/**
 * About what `feed` takes encoded, in bytes, without encoding it (records queued before the
 * schema is registered cannot be): the feature rows, the ids, and a fixed share per item.
 */
export function servedBytes(feed: ServedFeed): number {
  let bytes = 64 + feed.requestId.length + feed.userId.length + 12 * feed.items.length;
  for (const item of feed.items) bytes += item.itemId.length + item.source.length;
  const logged = feed.candidates;
  if (logged) {
    bytes += logged.features.length + 8 * logged.featureNames.length;
    for (const id of logged.itemIds) bytes += id.length + 1;
  }
  return bytes;
}

export function startServedLog(options: ServedLogOptions): ServedLog {
  const { config, metrics } = options;
  const log = options.log.child({ component: 'served-log' });
  const maxBuffered = options.maxBuffered ?? 10_000;
  const maxBufferedBytes = options.maxBufferedBytes ?? 64 * 1024 * 1024;
  const topic = config.kafka.topics.served;
  const kafka = createKafka(config.kafka, log, 'served-log');
  const producer = createProducer(kafka);
  const stopping = new AbortController();

  const dropped = new Counter({
    name: 'recsys_served_log_dropped_total',
    help: 'served-log records dropped (buffer full, not encodable, or given up at close), by reason',
    labelNames: ['reason'],
    registers: [metrics],
  });
  const failures = new Counter({
    name: 'recsys_served_log_failures_total',
    help: 'failed produce attempts of the served log (retried until the buffer overflows)',
    registers: [metrics],
  });
  const written = new Counter({
    name: 'recsys_served_log_records_total',
    help: 'served-log records Kafka acknowledged',
    registers: [metrics],
  });
  const droppedFull = dropped.labels('buffer_full');
  const droppedEncode = dropped.labels('encode');
  const droppedClosed = dropped.labels('closed');

  let encoder: Encoder<ServedFeed> | null = null;
  let batcher: KafkaBatcher | null = null;
  let failing: string | null = null;
  /** Records accepted and neither acknowledged nor dropped yet (pre-start queue included). */
  let outstanding = 0;
  /** Their estimated bytes (`servedBytes`, taken at `write`). */
  let outstandingBytes = 0;
  const early: [ServedFeed, number][] = [];
  const settled = new Set<Promise<void>>();
  const settle = (bytes: number): void => {
    outstanding--;
    outstandingBytes -= bytes;
  };

  const send = (feed: ServedFeed, bytes: number): void => {
    let value: Buffer;
    try {
      value = (encoder as Encoder<ServedFeed>).encode(feed);
    } catch (err) {
      settle(bytes);
      droppedEncode.inc();
      log.warn({ err: (err as Error).message, requestId: feed.requestId }, 'served record dropped');
      return;
    }
    const p = (batcher as KafkaBatcher)
      .send(topic, { key: feed.userId, value })
      .then(
        () => written.inc(),
        () => droppedClosed.inc(),
      )
      .finally(() => {
        settle(bytes);
        settled.delete(p);
      });
    settled.add(p);
  };

  const ready = (async () => {
    const forever = retryForever(log, stopping.signal);
    await forever('kafka topics', () => ensureTopics(kafka, config.kafka, log));
    await forever('kafka producer connect', () => producer.connect());
    const subject = subjectsFor(config.kafka.topics).find((s) => s.name === 'ServedFeed');
    if (!subject) throw new Error('no ServedFeed subject');
    const id = await forever('schema registration', () =>
      registerSchema(config.registry.url, subject),
    );
    encoder = createEncoder<ServedFeed>(id, subject.schema);
    batcher = new KafkaBatcher({
      producer,
      // Nobody waits for these records: a longer linger than ingest's makes fewer, larger
      // produce requests (each costs the server CPU).
      lingerMs: config.serving.servedLingerMs,
      maxBatch: config.ingest.maxKafkaBatch,
      maxBatchBytes: config.ingest.maxKafkaBatchBytes,
      log,
      onSendError: (err) => {
        failures.inc();
        failing = (err as Error).message;
      },
      onBatch: () => {
        failing = null;
      },
    });
    for (const [feed, bytes] of early.splice(0)) send(feed, bytes);
    log.info({ topic, schemaId: id }, 'served log ready');
  })();
  ready.catch((err: Error) => {
    if (!stopping.signal.aborted) log.error({ err: err.message }, 'served log failed to start');
  });

  return {
    write(feed) {
      const bytes = servedBytes(feed);
      if (
        outstanding >= maxBuffered ||
        outstandingBytes + bytes > maxBufferedBytes ||
        stopping.signal.aborted
      ) {
        droppedFull.inc();
        return;
      }
      outstanding++;
      outstandingBytes += bytes;
      if (batcher) send(feed, bytes);
      else early.push([feed, bytes]);
    },
    check() {
      if (!batcher) throw new Error('served log: not connected yet');
      if (failing) throw new Error(`served log: last send failed: ${failing}`);
    },
    async flush() {
      await ready;
      await batcher?.flush();
      await Promise.allSettled([...settled]);
    },
    async close() {
      stopping.abort(new Error('closing'));
      await ready.catch(() => undefined);
      await batcher?.close(5000);
      await Promise.allSettled([...settled]);
      if (early.length > 0) {
        for (const [, bytes] of early) settle(bytes);
        droppedClosed.inc(early.splice(0).length);
      }
      await producer.disconnect().catch(() => undefined);
    },
  };
}
