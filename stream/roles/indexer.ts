/**
 * The Elasticsearch indexer role: consumes the events, served and DLQ topics in its own group
 * and writes every record to its data stream (`logs-recsys.<stream>-<namespace>`, see
 * `indexer-docs.ts`) for Kibana. Offsets move only once a chunk's documents are durable.
 *
 * Exactly-once effect over at-least-once delivery: each document's `_id` is its idempotency key
 * (eventId, requestId, a digest of the dead letter) and goes in as a bulk `create`, so a
 * redelivered record meets a 409 and counts as a duplicate. Caveat: `_id` is unique per backing
 * index, so a record redelivered after its data stream rolled over is indexed a second time.
 *
 * One chunk, step by step:
 *   1. skip the records an earlier attempt at this chunk already made durable (the consumer
 *      loop retries a failed chunk with the same record objects; a WeakSet remembers them, so
 *      only what failed is sent again, and nothing outlives the chunk);
 *   2. a record whose value is not the topic's schema is dead-lettered as `undecodable`;
 *   3. build and send the documents through the process's {@link BulkWriter} (bounded bulk size
 *      and requests in flight: the backpressure);
 *   4. documents Elasticsearch refuses for good (400: mapping, parse, `_id`) go to the DLQ topic
 *      as `es_rejected` with the exact Kafka value bytes;
 *   5. if any document met a cluster problem (429, 5xx, no connection), throw a retriable error:
 *      the consumer loop backs off, heartbeats, and calls again with the same chunk.
 *
 * Dead letters the indexer writes use the DlqRecord contract: `source` is the event's ingest
 * path; served feeds and undecodable records (which came over Kafka, a path the contract has no
 * symbol for) say `http`, and `reason`/`message` tell them apart. `receivedAt` is the original's
 * Kafka timestamp (the event's own `receivedAt` for events), so a replay writes byte-identical
 * dead letters, which the DLQ data stream collapses into one document. Records of the DLQ topic
 * itself are never dead-lettered again (that would loop): they are logged and counted, and stay
 * in the DLQ topic.
 *
 * @example
 *   const indexer = startIndexer({ config, log, metrics });
 *   await indexer.ready;
 *   await indexer.stop();
 */
import { createHash } from 'node:crypto';
import { Counter, Histogram, type Registry } from 'prom-client';
import type { Message } from 'kafkajs';
import {
  checkHealth,
  DependencyUnavailableError,
  isRetriable,
  retryForever,
  type RoleDeps,
  type StreamRole,
} from '../../core/index.js';
import {
  createDecoder,
  createEncoder,
  registerSchema,
  subjectsFor,
  type Decoder,
  type DlqRecord,
  type Encoder,
  type EventSource,
  type SchemaName,
  type ServedFeed,
  type UserEvent,
} from '../../schemas/index.js';
import {
  consumerMetrics,
  startConsumer,
  type ConsumedRecord,
  type ConsumerHandle,
  type UndecodableRecord,
} from '../consumer.js';
import { BulkWriter, elasticRetriable, type BulkItem, type ItemFailure } from '../elastic-bulk.js';
import { createElastic, elasticHealth } from '../elastic.js';
import {
  checkNamespace,
  dataStreamName,
  dlqDocument,
  eventDocument,
  installTemplates,
  PAYLOAD_FIELDS,
  servedDocument,
  STREAMS,
  type EsDocument,
  type StreamName,
} from '../indexer-docs.js';
import { createKafka, createProducer, ensureTopics, kafkaHealth } from '../kafka.js';

type Value = UserEvent | ServedFeed | DlqRecord;

/** A decoded record value with what the indexer needs beyond it. */
interface Decoded {
  value: Value;
  /** Full name of the writer schema's record, e.g. `recsys.UserEvent`. */
  schema: string | undefined;
  /** The Kafka value bytes, for the DLQ (`original`) and the dead-letter digest. */
  raw: Buffer;
}

const SCHEMA_OF: Readonly<Record<StreamName, SchemaName>> = {
  events: 'UserEvent',
  served: 'ServedFeed',
  dlq: 'DlqRecord',
};

const OUTCOMES = ['created', 'duplicate', 'rejected'] as const;
type Outcome = (typeof OUTCOMES)[number];

interface IndexerMetrics {
  bulkSeconds: Histogram;
  bulkDocs: Histogram;
  docs: Counter<'stream' | 'outcome'>;
  bulkFailures: Counter;
}

const metricsByRegistry = new WeakMap<Registry, IndexerMetrics>();

function indexerMetrics(registry: Registry): IndexerMetrics {
  const existing = metricsByRegistry.get(registry);
  if (existing) return existing;
  const registers = [registry];
  const metrics: IndexerMetrics = {
    bulkSeconds: new Histogram({
      name: 'recsys_indexer_bulk_seconds',
      help: 'duration of one Elasticsearch bulk request',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    bulkDocs: new Histogram({
      name: 'recsys_indexer_bulk_docs',
      help: 'documents per Elasticsearch bulk request',
      buckets: [1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000],
      registers,
    }),
    docs: new Counter({
      name: 'recsys_indexer_docs_total',
      help: 'documents made durable, by data stream and outcome (created, duplicate = indexed before, rejected = refused by Elasticsearch and dead-lettered)',
      labelNames: ['stream', 'outcome'],
      registers,
    }),
    bulkFailures: new Counter({
      name: 'recsys_indexer_bulk_failures_total',
      help: 'bulk requests that failed or left documents to retry (cluster busy, down or refusing)',
      registers,
    }),
  };
  metricsByRegistry.set(registry, metrics);
  return metrics;
}

/** What goes to the DLQ (or, for the DLQ topic's own records, to the log). */
interface Rejection {
  stream: StreamName;
  topic: string;
  partition: number;
  offset: string;
  key: string | null;
  raw: Buffer;
  reason: 'undecodable' | 'es_rejected';
  message: string;
  field: string | null;
  source: EventSource;
  userId: string | null;
  receivedAt: number;
}

/** Longest Elasticsearch error reason kept in a dead letter (they quote the offending value). */
const REASON_KEEP = 1000;

const clip = (s: string, n: number): string => (s.length <= n ? s : `${s.slice(0, n)}…`);

export function startIndexer({ config, log: parentLog, metrics }: RoleDeps): StreamRole {
  const log = parentLog.child({ role: 'indexer' });
  const { topics } = config.kafka;
  const namespace = config.indexer.namespace;
  checkNamespace(namespace);

  const kafka = createKafka(config.kafka, log, 'indexer');
  const producer = createProducer(kafka);
  const es = createElastic(config.elasticsearch.url);
  const m = indexerMetrics(metrics);
  const undecodableCount = consumerMetrics(metrics).undecodable.labels({
    group: config.consumer.groups.indexer,
  });
  const subjects = subjectsFor(topics);

  // Hot-path lookups built once: topic → stream, stream → data stream, schema name, counters.
  const streamOf = new Map<string, StreamName>([
    [topics.events, 'events'],
    [topics.served, 'served'],
    [topics.dlq, 'dlq'],
  ]);
  const indexOf = Object.fromEntries(
    STREAMS.map((s) => [s, dataStreamName(s, namespace)]),
  ) as Record<StreamName, string>;
  const schemaOf = Object.fromEntries(
    STREAMS.map((s) => {
      const { schema } = subjects.find((x) => x.name === SCHEMA_OF[s]) as (typeof subjects)[0];
      return [s, `${schema.namespace}.${schema.name}`];
    }),
  ) as Record<StreamName, string>;
  const counters = Object.fromEntries(
    STREAMS.map((s) => [
      s,
      Object.fromEntries(OUTCOMES.map((o) => [o, m.docs.labels({ stream: s, outcome: o })])),
    ]),
  ) as Record<StreamName, Record<Outcome, Counter.Internal>>;

  const writer = new BulkWriter({
    client: es,
    maxDocs: config.indexer.bulkDocs,
    maxInFlight: config.indexer.maxInFlight,
    onBulk: (seconds, docs, incomplete) => {
      m.bulkSeconds.observe(seconds);
      m.bulkDocs.observe(docs);
      if (incomplete) m.bulkFailures.inc();
    },
  });

  const registry = createDecoder<Value>(config.registry.url);
  const decoder: Decoder<Decoded> = {
    prepare: (messages) => registry.prepare(messages),
    decode: (message) => {
      const value = registry.decode(message);
      const type = (value as { constructor?: { getType?: () => { name?: string } } }).constructor;
      return { value, schema: type?.getType?.().name, raw: message as Buffer };
    },
  };

  let dlqEncoder: Encoder<DlqRecord> | null = null;
  let consumer: ConsumerHandle | null = null;
  const stopping = new AbortController();
  let fail: (err: Error) => void = () => undefined;
  const failed = new Promise<never>((_, reject) => {
    fail = reject;
  });
  failed.catch(() => undefined);

  /** Records (the consumer's objects) whose effect is durable; see step 1 above. */
  const durable = new WeakSet<object>();

  const deadLetter = async (rejections: Rejection[]): Promise<void> => {
    const messages: Message[] = [];
    for (const r of rejections) {
      if (r.stream === 'dlq') {
        log.error(
          { topic: r.topic, partition: r.partition, offset: r.offset, reason: r.reason },
          `dead letter cannot be indexed (${r.message}); it stays in the DLQ topic`,
        );
        continue;
      }
      const record: DlqRecord = {
        reason: r.reason,
        message: r.message,
        field: r.field,
        source: r.source,
        topic: null,
        userId: r.userId,
        receivedAt: r.receivedAt,
        original: r.raw,
      };
      messages.push({
        key: r.userId ?? r.key,
        value: (dlqEncoder as Encoder<DlqRecord>).encode(record),
        headers: { origin: `${r.topic}/${r.partition}/${r.offset}` },
      });
    }
    if (messages.length === 0) return;
    try {
      await producer.send({ topic: topics.dlq, acks: -1, messages });
    } catch (err) {
      throw new DependencyUnavailableError('kafka', `dead-lettering: ${(err as Error).message}`, {
        cause: err,
      });
    }
  };

  const where = (r: { topic: string; partition: number; offset: string }): string =>
    `${r.topic}[${r.partition}]@${r.offset}`;

  const build = (stream: StreamName, r: ConsumedRecord<Decoded>, now: number): EsDocument => {
    const ctx = { namespace, now };
    switch (stream) {
      case 'events':
        return eventDocument(r.value.value as UserEvent, ctx);
      case 'served':
        return servedDocument(r.value.value as ServedFeed, ctx);
      case 'dlq': {
        const digest = createHash('sha256').update(r.value.raw).digest('base64url');
        return dlqDocument(r.value.value as DlqRecord, { ...r, digest }, ctx);
      }
    }
  };

  /** A rejection for one consumed record, with the payload's own source, user and time. */
  const rejectionOf = (
    stream: StreamName,
    r: ConsumedRecord<Decoded>,
    reason: Rejection['reason'],
    detail: string,
    field: string | null,
  ): Rejection => {
    const v = r.value.value as Partial<UserEvent & ServedFeed>;
    const isEvent = stream === 'events' && reason === 'es_rejected';
    return {
      stream,
      topic: r.topic,
      partition: r.partition,
      offset: r.offset,
      key: r.key,
      raw: r.value.raw,
      reason,
      message: `${detail} (${where(r)})`,
      field,
      source: isEvent ? (v.source as EventSource) : 'http',
      userId: reason === 'es_rejected' ? (v.userId ?? r.key) : r.key,
      receivedAt: isEvent ? (v.receivedAt as number) : r.timestamp,
    };
  };

  const handle = async (records: ConsumedRecord<Decoded>[]): Promise<void> => {
    const now = Date.now();
    const work: Array<{ record: ConsumedRecord<Decoded>; stream: StreamName }> = [];
    const items: BulkItem[] = [];
    const rejections: Array<{ record: ConsumedRecord<Decoded>; rejection: Rejection }> = [];
    for (const r of records) {
      if (durable.has(r)) continue;
      const stream = streamOf.get(r.topic) as StreamName;
      if (r.value.schema !== schemaOf[stream]) {
        const detail = `schema ${r.value.schema} is not ${schemaOf[stream]}, the value schema of this topic`;
        rejections.push({
          record: r,
          rejection: rejectionOf(stream, r, 'undecodable', detail, null),
        });
        continue;
      }
      const { id, doc } = build(stream, r, now);
      work.push({ record: r, stream });
      items.push({ index: indexOf[stream], id, source: JSON.stringify(doc) });
    }

    const results = await writer.write(items);
    let missing = 0;
    let example: ItemFailure | undefined;
    results.forEach((res, i) => {
      const { record, stream } = work[i] as (typeof work)[0];
      if (res.outcome === 'created' || res.outcome === 'duplicate') {
        durable.add(record);
        counters[stream][res.outcome].inc();
      } else if (res.outcome === 'rejected') {
        const esField = /\bfield \[([^\]]+)\]/.exec(res.reason)?.[1];
        const field =
          esField !== undefined && stream !== 'dlq'
            ? (PAYLOAD_FIELDS[stream][esField] ?? null)
            : null;
        const detail = `${res.type}: ${clip(res.reason, REASON_KEEP)}`;
        rejections.push({
          record,
          rejection: rejectionOf(stream, record, 'es_rejected', detail, field),
        });
      } else {
        missing++;
        example ??= res;
      }
    });

    if (rejections.length > 0) {
      await deadLetter(rejections.map((x) => x.rejection));
      for (const { record, rejection } of rejections) {
        durable.add(record);
        if (rejection.reason === 'es_rejected') counters[rejection.stream].rejected.inc();
        // The consumer loop counts what it cannot decode; a value of another topic's schema
        // decodes, so it is counted here, under the same metric.
        else undecodableCount.inc();
      }
      log.warn(
        { count: rejections.length, reason: rejections[0]?.rejection.message },
        'records refused and dead-lettered',
      );
    }
    if (example) {
      throw new DependencyUnavailableError(
        'elasticsearch',
        `${missing} of ${items.length} documents not indexed yet: HTTP ${example.status} ${example.type}: ${clip(example.reason, 300)}`,
      );
    }
  };

  const undecodable = async (bad: UndecodableRecord[]): Promise<void> => {
    await deadLetter(
      bad.map((b) => ({
        stream: streamOf.get(b.topic) as StreamName,
        topic: b.topic,
        partition: b.partition,
        offset: b.offset,
        key: b.message.key ? b.message.key.toString() : null,
        raw: b.message.value ?? Buffer.alloc(0),
        reason: 'undecodable' as const,
        message: `${b.error.message} (${where(b)})`,
        field: null,
        source: 'http' as const,
        userId: b.message.key ? b.message.key.toString() : null,
        receivedAt: Number(b.message.timestamp),
      })),
    );
  };

  const forever = retryForever(log, stopping.signal);

  let consuming = false;
  const ready = (async () => {
    await forever('kafka topics', () => ensureTopics(kafka, config.kafka, log));
    const dlqSubject = subjects.find((s) => s.name === 'DlqRecord') as (typeof subjects)[0];
    // A refused schema is not retried: the role stops (see `failed`).
    const dlqId = await forever(
      'schema registration',
      () => registerSchema(config.registry.url, dlqSubject),
      isRetriable,
    );
    dlqEncoder = createEncoder<DlqRecord>(dlqId, dlqSubject.schema);
    await forever('kafka producer connect', () => producer.connect());
    // Before the first write: without our templates, the built-in `logs-*-*` one would create
    // the data streams with its dynamic mappings.
    await forever(
      'elasticsearch index templates',
      () => installTemplates(es, namespace, log),
      elasticRetriable,
    );
    stopping.signal.throwIfAborted();
    consumer = startConsumer<Decoded>({
      kafka,
      groupId: config.consumer.groups.indexer,
      topics: [topics.events, topics.served, topics.dlq],
      decoder,
      handle,
      undecodable,
      log,
      metrics: consumerMetrics(metrics),
      tuning: config.consumer,
    });
    consumer.failed.catch(fail);
    await consumer.ready;
    consuming = true;
    log.info(
      { group: config.consumer.groups.indexer, dataStreams: Object.values(indexOf) },
      'indexer ready',
    );
  })();
  ready.catch((err: Error) => {
    if (!stopping.signal.aborted) fail(err);
  });

  return {
    ready,
    failed,
    readiness: () =>
      checkHealth(
        {
          elasticsearch: () => elasticHealth(es, config.healthTimeoutMs),
          kafka: () => kafkaHealth(kafka, config.healthTimeoutMs),
          indexer: () => {
            if (!consuming)
              throw new Error('indexer: still starting (Kafka, registry or Elasticsearch)');
            if (!consumer?.healthy())
              throw new Error('indexer: not in its consumer group, or retrying a chunk');
          },
        },
        config.healthTimeoutMs,
      ),
    async stop() {
      stopping.abort(new Error('indexer stopping'));
      // Finishes the chunk in hand (its bulk requests and dead letters), commits, leaves.
      await consumer?.stop();
      await ready.catch(() => undefined);
      await producer.disconnect().catch(() => undefined);
      await es.close().catch(() => undefined);
      log.info('indexer stopped');
    },
  };
}
