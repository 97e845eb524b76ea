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
 * One chunk, step by step (`indexer-chunks.ts`):
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
import { Counter, Histogram, type Registry } from 'prom-client';
import {
  checkHealth,
  isRetriable,
  retryForever,
  type RoleDeps,
  type StreamRole,
} from '../../core/index.js';
import {
  createEncoder,
  registerSchema,
  subjectsFor,
  type DlqRecord,
  type Encoder,
  type SchemaName,
} from '../../schemas/index.js';
import { startConsumer, type ConsumerHandle } from '../consumer.js';
import { consumerMetrics } from '../consumer-metrics.js';
import { BulkWriter, elasticRetriable } from '../elastic-bulk.js';
import { createElastic, elasticHealth } from '../elastic.js';
import { IndexerChunks, OUTCOMES, type Decoded, type Outcome } from '../indexer-chunks.js';
import {
  checkNamespace,
  dataStreamName,
  installTemplates,
  STREAMS,
  type StreamName,
} from '../indexer-docs.js';
import { createKafka, createProducer, ensureTopics, kafkaHealth } from '../kafka.js';

const SCHEMA_OF: Readonly<Record<StreamName, SchemaName>> = {
  events: 'UserEvent',
  served: 'ServedFeed',
  dlq: 'DlqRecord',
};

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

export function startIndexer({ config, log: parentLog, metrics }: RoleDeps): StreamRole {
  const log = parentLog.child({ role: 'indexer' });
  const { topics } = config.kafka;
  const namespace = config.indexer.namespace;
  checkNamespace(namespace);

  const kafka = createKafka(config.kafka, log, 'indexer');
  const producer = createProducer(kafka);
  const es = createElastic(config.elasticsearch);
  const m = indexerMetrics(metrics);
  const subjects = subjectsFor(topics);
  // Hot-path lookups built once: topic → stream, stream → data stream, schema name, counters.
  const indexOf = Object.fromEntries(
    STREAMS.map((s) => [s, dataStreamName(s, namespace)]),
  ) as Record<StreamName, string>;
  let dlqEncoder: Encoder<DlqRecord> | null = null;
  const chunks = new IndexerChunks({
    config,
    log,
    producer,
    writer: new BulkWriter({
      client: es,
      maxDocs: config.indexer.bulkDocs,
      maxInFlight: config.indexer.maxInFlight,
      onBulk: (seconds, docs, incomplete) => {
        m.bulkSeconds.observe(seconds);
        m.bulkDocs.observe(docs);
        if (incomplete) m.bulkFailures.inc();
      },
    }),
    streamOf: new Map<string, StreamName>([
      [topics.events, 'events'],
      [topics.served, 'served'],
      [topics.dlq, 'dlq'],
    ]),
    indexOf,
    schemaOf: Object.fromEntries(
      STREAMS.map((s) => {
        const { schema } = subjects.find((x) => x.name === SCHEMA_OF[s]) as (typeof subjects)[0];
        return [s, `${schema.namespace}.${schema.name}`];
      }),
    ) as Record<StreamName, string>,
    counters: Object.fromEntries(
      STREAMS.map((s) => [
        s,
        Object.fromEntries(OUTCOMES.map((o) => [o, m.docs.labels({ stream: s, outcome: o })])),
      ]),
    ) as Record<StreamName, Record<Outcome, Counter.Internal>>,
    deadLetters: consumerMetrics(metrics).deadLetters,
    undecodableCount: consumerMetrics(metrics).undecodable.labels({
      group: config.consumer.groups.indexer,
    }),
    dlqEncoder: () => dlqEncoder as Encoder<DlqRecord>,
  });

  let consumer: ConsumerHandle | null = null;
  const stopping = new AbortController();
  let fail: (err: Error) => void = () => undefined;
  const failed = new Promise<never>((_, reject) => {
    fail = reject;
  });
  failed.catch(() => undefined);
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
      decoder: chunks.decoder,
      handle: (records) => chunks.handle(records),
      rejected: (bad) => chunks.rejected(bad),
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
