/** Stream side: HTTP listeners and ports, ingest bounds, consumer groups, features, trending, indexer, lake. */
import type { VariableDoc } from './doc.js';

export const STREAM: readonly VariableDoc[] = [
  { name: 'RECSYS_HTTP_HOST', default: '127.0.0.1', doc: 'HTTP listen address' },
  {
    name: 'RECSYS_HTTP_PORT',
    default: '',
    doc: "HTTP port of this process whatever its kind (tests, a second process of a kind); unset: the kind's own port below",
  },
  {
    name: 'RECSYS_SERVING_PORT',
    default: '8080',
    doc: 'HTTP port of the feed server (its workers share it)',
  },
  {
    name: 'RECSYS_STREAM_PORT',
    default: '8090',
    doc: 'HTTP port of a stream process (`POST /v1/events` with ingest, health, metrics)',
  },
  {
    name: 'RECSYS_BATCH_PORT',
    default: '8095',
    doc: 'HTTP port of `npm run batch -- --serve` (the retrain webhook, health, metrics)',
  },
  {
    name: 'RECSYS_HTTP_MAX_BODY_BYTES',
    default: '524288',
    doc: "largest HTTP request body, bytes; at most 1000000 so a rejected body fits a DLQ record under Kafka's 1 MB limit",
  },
  {
    name: 'RECSYS_INGEST_HTTP_TIMEOUT_MS',
    default: '10000',
    doc: 'how long POST /v1/events waits for Kafka before answering 503, ms',
  },
  {
    name: 'RECSYS_INGEST_MAX_EVENT_BYTES',
    default: '16384',
    doc: 'largest accepted event payload, bytes',
  },
  { name: 'RECSYS_INGEST_MAX_BATCH_EVENTS', default: '500', doc: 'most events in one HTTP batch' },
  {
    name: 'RECSYS_INGEST_MAX_PAST_MS',
    default: '604800000',
    doc: 'oldest accepted event timestamp, ms before now (7 days)',
  },
  {
    name: 'RECSYS_INGEST_MAX_FUTURE_MS',
    default: '300000',
    doc: 'newest accepted event timestamp, ms after now (clock skew, 5 min)',
  },
  {
    name: 'RECSYS_INGEST_LINGER_MS',
    default: '5',
    doc: 'how long the bridge gathers events into one Kafka batch, ms',
  },
  { name: 'RECSYS_INGEST_MAX_BATCH', default: '500', doc: 'most events in one Kafka produce call' },
  {
    name: 'RECSYS_INGEST_MAX_BATCH_BYTES',
    default: '524288',
    doc: 'payload bytes after which a Kafka produce request goes out (below the broker 1 MB limit)',
  },
  {
    name: 'RECSYS_INGEST_MAX_QUEUED_BYTES',
    default: '67108864',
    doc: 'bytes of events the bridge holds for Kafka (64 MiB); beyond, HTTP answers 503 with Retry-After, MQTT QoS 1 waits unacknowledged and QoS 0 is dropped and counted',
  },
  {
    name: 'RECSYS_INGEST_DLQ_TIMEOUT_MS',
    default: '5000',
    doc: 'how long the bridge waits for Kafka to take a DLQ record; then the input is not acknowledged (HTTP 503, QoS 1 retried, QoS 0 dropped and counted), ms',
  },
  {
    name: 'RECSYS_INGEST_RECENT_EVENTS',
    default: '100000',
    doc: 'events (userId, eventId) the bridge remembers as written: a re-send of one of them, or of one still on its way, is not written to Kafka again',
  },
  {
    name: 'RECSYS_TOPIC_ITEMS',
    default: 'recsys.items.v1',
    doc: 'item catalog updates (JSON, key = itemId, compacted)',
  },
  {
    name: 'RECSYS_CONSUMER_MAX_WAIT_MS',
    default: '100',
    doc: 'longest the broker holds a consumer fetch while no data is there, ms',
  },
  {
    name: 'RECSYS_CONSUMER_MIN_BYTES',
    default: '1',
    doc: 'bytes the broker waits for before answering a fetch (1 = at once, lowest latency)',
  },
  {
    name: 'RECSYS_CONSUMER_CHUNK_SIZE',
    default: '2000',
    doc: 'records a consumer makes durable at once (one Redis pipeline, one bulk request); 2000 over 500 lifted the feature consumer from 19k to 22k events/s',
  },
  {
    name: 'RECSYS_CONSUMER_CONCURRENCY',
    default: '3',
    doc: 'partitions one consumer process works on at the same time',
  },
  {
    name: 'RECSYS_CONSUMER_COMMIT_INTERVAL_MS',
    default: '1000',
    doc: 'how often consumers commit the offsets whose effects are durable, ms',
  },
  {
    name: 'RECSYS_CONSUMER_SESSION_TIMEOUT_MS',
    default: '10000',
    doc: "consumer group session timeout, ms: a killed consumer's partitions move on after it (heartbeats every tenth of it, also while a handler retries)",
  },
  {
    name: 'RECSYS_CONSUMER_POISON_ATTEMPTS',
    default: '3',
    doc: 'attempts a record that keeps failing (Lua error, WRONGTYPE, a value the sink refuses) gets, alone, before it goes to the DLQ',
  },
  {
    name: 'RECSYS_CONSUMER_OOM_ATTEMPTS',
    default: '30',
    doc: 'attempts (about a minute of backoff) of a chunk that Redis refuses for memory (OOM) or that fails in a way of no known kind, before its records are tried one by one and dead-lettered',
  },
  {
    name: 'RECSYS_LAG_POLL_MS',
    default: '15000',
    doc: "how often a consumer reads its partitions' lag from Kafka even when no record arrives (so a stalled consumer shows), ms; 0 = only as records arrive",
  },
  {
    name: 'RECSYS_GROUP_FEATURES',
    default: 'recsys-features',
    doc: 'consumer group of the session-feature consumer',
  },
  {
    name: 'RECSYS_GROUP_INDEXER',
    default: 'recsys-indexer',
    doc: 'consumer group of the Elasticsearch indexer',
  },
  {
    name: 'RECSYS_GROUP_LAKE',
    default: 'recsys-lake',
    doc: 'consumer group of the Parquet lake sink',
  },
  {
    name: 'RECSYS_GROUP_IMPRESSIONS',
    default: 'recsys-impressions',
    doc: 'consumer group of the impressions role (served feeds add, interactions reset)',
  },
  {
    name: 'RECSYS_GROUP_ATTRIBUTION',
    default: 'recsys-attribution',
    doc: 'consumer group of the attribution role (online CTR and hit rate per model version)',
  },
  {
    name: 'RECSYS_ATTRIBUTION_WINDOW_MS',
    default: '1800000',
    doc: 'an event is attributed to a feed served to its user at most this long before, ms (30 min)',
  },
  {
    name: 'RECSYS_GROUP_CATALOG',
    default: 'recsys-catalog',
    doc: 'consumer group of the catalog loader (items topic to Redis)',
  },
  {
    name: 'RECSYS_FEATURES_HALF_LIFE_MS',
    default: '86400000',
    doc: "half-life of a user's category affinities, ms (1 day)",
  },
  {
    name: 'RECSYS_FEATURES_SESSION_GAP_MS',
    default: '1800000',
    doc: 'inactivity after which a new session starts when the client sends no sessionId, ms',
  },
  {
    name: 'RECSYS_FEATURES_RECENT_ITEMS',
    default: '20',
    doc: "items kept in a user's recent list",
  },
  {
    name: 'RECSYS_FEATURES_MAX_CATEGORIES',
    default: '8',
    doc: 'category affinities kept per user (the weakest is dropped)',
  },
  {
    name: 'RECSYS_FEATURES_DEDUP_WINDOW',
    default: '10000',
    doc: 'most eventIds remembered per user to drop re-sent events, 8 bytes each (0 = off; Kafka redelivery is exact via offsets)',
  },
  {
    name: 'RECSYS_FEATURES_DEDUP_AGE_MS',
    default: '86400000',
    doc: 'eventIds are remembered at least this long after the bridge received them, ms (1 day), unless the count above pushes them out',
  },
  {
    name: 'RECSYS_FEATURES_TTL_S',
    default: '2592000',
    doc: "a user's features expire after this much inactivity, seconds (30 days)",
  },
  {
    name: 'RECSYS_FEATURES_CONSUMED_TYPES',
    default: 'purchase',
    doc: 'event types that consume an item: the user is never shown it again (all five where users never repeat an item, e.g. films)',
  },
  {
    name: 'RECSYS_FEATURES_CONSUMED_ITEMS',
    default: '500',
    doc: 'consumed items remembered per user, newest first (0 = none)',
  },
  {
    name: 'RECSYS_FEATURES_COVISIT_WINDOW',
    default: '5',
    doc: "online co-visitation: an event pairs with the user's previous distinct items up to this distance, weighted 1/sqrt(distance); 0 = off",
  },
  {
    name: 'RECSYS_TRENDING_WINDOWS_S',
    default: '3600,86400',
    doc: 'sliding windows trending items are counted over, seconds',
  },
  {
    name: 'RECSYS_TRENDING_BUCKETS',
    default: '60',
    doc: 'buckets per trending window (its time resolution is window / buckets)',
  },
  {
    name: 'RECSYS_TRENDING_SHARDS',
    default: '0',
    doc: 'hash slots the trending sets are spread over by item (read merged); 0: 1 on one Redis node, 16 on a Redis Cluster',
  },
  {
    name: 'RECSYS_ES_NAMESPACE',
    default: 'default',
    doc: 'data stream namespace: logs-recsys.events-<ns> and logs-recsys.served-<ns>',
  },
  {
    name: 'RECSYS_INDEXER_BULK_DOCS',
    default: '1000',
    doc: 'documents per Elasticsearch bulk request',
  },
  {
    name: 'RECSYS_INDEXER_MAX_INFLIGHT',
    default: '2',
    doc: 'bulk requests in flight per indexer process (backpressure beyond)',
  },
  { name: 'RECSYS_LAKE_DIR', default: '.local/lake', doc: 'root directory of the Parquet lake' },
  {
    name: 'RECSYS_LAKE_ROLL_RECORDS',
    default: '100000',
    doc: 'records after which the lake sink closes a Parquet file',
  },
  {
    name: 'RECSYS_LAKE_ROLL_MS',
    default: '60000',
    doc: 'age after which the lake sink closes an open Parquet file, ms',
  },
];
