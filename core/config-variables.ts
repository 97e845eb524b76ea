/**
 * Every environment variable the stack reads, with its default and what it sets: the one table
 * `loadConfig` (`config.ts`) validates against and `npm run stack -- env` prints.
 */
/** One documented variable. The table below is also what `npm run stack -- env` prints. */
export interface VariableDoc {
  name: string;
  default: string;
  doc: string;
}

export const VARIABLES: readonly VariableDoc[] = [
  { name: 'RECSYS_LOG_LEVEL', default: 'info', doc: 'pino log level' },
  {
    name: 'RECSYS_KAFKA_BROKERS',
    default: '127.0.0.1:9092',
    doc: 'comma-separated Kafka bootstrap brokers',
  },
  { name: 'RECSYS_KAFKA_CLIENT_ID', default: 'recsys', doc: 'Kafka client id prefix' },
  {
    name: 'RECSYS_TOPIC_EVENTS',
    default: 'recsys.events.v1',
    doc: 'accepted user events (Avro, key = userId)',
  },
  {
    name: 'RECSYS_TOPIC_DLQ',
    default: 'recsys.events.dlq.v1',
    doc: 'rejected input with reason and original bytes',
  },
  { name: 'RECSYS_TOPIC_SERVED', default: 'recsys.served.v1', doc: 'one record per feed served' },
  { name: 'RECSYS_TOPIC_PARTITIONS', default: '6', doc: 'partitions for topics the stack creates' },
  {
    name: 'RECSYS_SCHEMA_REGISTRY_URL',
    default: 'http://127.0.0.1:8081/apis/ccompat/v7',
    doc: 'Confluent-compatible schema registry base URL',
  },
  { name: 'RECSYS_REDIS_URL', default: 'redis://127.0.0.1:6379', doc: 'Redis URL' },
  { name: 'RECSYS_ES_URL', default: 'http://127.0.0.1:9200', doc: 'Elasticsearch URL' },
  { name: 'RECSYS_MQTT_URL', default: 'mqtt://127.0.0.1:1883', doc: 'MQTT broker URL' },
  { name: 'RECSYS_MQTT_USERNAME', default: 'bridge', doc: 'MQTT account of the ingest bridge' },
  {
    name: 'RECSYS_MQTT_PASSWORD',
    default: 'bridge-local-secret',
    doc: 'password of that account (local default; set it in production)',
  },
  {
    name: 'RECSYS_MQTT_SHARE_GROUP',
    default: 'ingest',
    doc: 'shared-subscription group the bridges split the load in',
  },
  {
    name: 'RECSYS_MQTT_TOPIC_PREFIX',
    default: 'recsys/events',
    doc: 'events arrive on <prefix>/<userId>',
  },
  {
    name: 'RECSYS_MQTT_CLIENT_ID',
    default: 'recsys-bridge-1',
    doc: 'MQTT client id of this bridge: stable across restarts (its session holds unacknowledged events), distinct per bridge',
  },
  {
    name: 'RECSYS_MQTT_SESSION_EXPIRY_S',
    default: '86400',
    doc: 'how long the broker keeps a stopped bridge session and queues events for it, seconds',
  },
  {
    name: 'RECSYS_MQTT_RECEIVE_MAXIMUM',
    default: '1000',
    doc: 'QoS 1 messages in flight from the broker to one bridge',
  },
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
    default: '30000',
    doc: 'consumer group session timeout, ms',
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
    default: '8',
    doc: 'latest eventIds remembered per user to drop re-sent events (Kafka redelivery is exact via offsets)',
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
  {
    name: 'RECSYS_BATCH_DIR',
    default: '.local/batch',
    doc: 'batch working directory (ETL tables, training data, evaluation reports)',
  },
  {
    name: 'RECSYS_MODEL_REGISTRY_URL',
    default: 'file://.local/models',
    doc: 'model registry: file://<dir> (local directory) or the MLflow tracking URL; MLFLOW_TRACKING_URI, when set, wins',
  },
  {
    name: 'MLFLOW_TRACKING_URI',
    default: '',
    doc: 'MLflow tracking server; when set the model registry is MLflow',
  },
  {
    name: 'RECSYS_MODEL_NAME',
    default: 'recsys-reranker',
    doc: 'registered model name of the reranker',
  },
  {
    name: 'RECSYS_MODEL_MIN_NDCG',
    default: '0.05',
    doc: 'a new model becomes champion only with NDCG@10 at least this and above the champion',
  },
  {
    name: 'RECSYS_PYTHON_VENV',
    default: '~/.cache/recsys/venv',
    doc: 'virtual environment the batch Python steps (LightGBM, ONNX export, MLflow) run in; created by the project',
  },
  {
    name: 'RECSYS_CANDIDATES_PER_USER',
    default: '200',
    doc: 'batch home-feed candidates kept per user',
  },
  {
    name: 'RECSYS_NEIGHBOURS_PER_ITEM',
    default: '50',
    doc: 'co-visitation neighbours kept per item (batch lists, and the online lists the feature role keeps)',
  },
  {
    name: 'RECSYS_CANDIDATES_KEEP_VERSIONS',
    default: '2',
    doc: 'batch output versions kept in Redis (the live one and rollbacks); older ones expire',
  },
  {
    name: 'RECSYS_RETRAIN_TOKEN',
    default: '',
    doc: 'bearer token of the retrain webhook; required by `npm run batch -- --serve`; Alertmanager sends it',
  },
  {
    name: 'RECSYS_BATCH_SCHEDULE',
    default: '',
    doc: 'cron expression for `npm run batch -- --schedule` (empty: run once)',
  },
  {
    name: 'RECSYS_JWT_SECRET',
    default: 'recsys-local-dev-secret-change-me-0123456789',
    doc: 'HS256 secret of the feed tokens (sub = userId); at least 32 characters; set it in production',
  },
  { name: 'RECSYS_JWT_ISSUER', default: 'recsys', doc: 'issuer the feed tokens must carry' },
  {
    name: 'RECSYS_INGEST_TOKENS',
    default: '',
    doc: 'comma-separated service tokens (24+ characters each) a backend sends as `Authorization: Bearer` to `POST /v1/events`; list old and new while rotating; empty: user JWTs only',
  },
  { name: 'RECSYS_LIVE_QUERY_AUTH', default: '0', doc: '1: the live socket also takes `?token=`' },
  {
    name: 'RECSYS_CORS_ORIGINS',
    default: '*',
    doc: 'comma-separated origins allowed to call the feed API from a browser (* = any)',
  },
  {
    name: 'RECSYS_FEED_DEFAULT_LIMIT',
    default: '20',
    doc: 'items in a feed when the request names no limit',
  },
  { name: 'RECSYS_FEED_MAX_LIMIT', default: '100', doc: 'most items a feed request may ask for' },
  {
    name: 'RECSYS_FEED_CANDIDATES',
    default: '200',
    doc: 'candidates reranked per feed (batch, real-time, trending, popularity together)',
  },
  {
    name: 'RECSYS_FEED_USER_CACHE',
    default: '10000',
    doc: 'users whose batch candidates one server process keeps in memory (per batch version, about 4 KB each; 0 = read every time)',
  },
  {
    name: 'RECSYS_FEED_MAX_PER_CATEGORY',
    default: '3',
    doc: 'diversity: most items of one category in the top 10',
  },
  {
    name: 'RECSYS_FEED_FATIGUE_IMPRESSIONS',
    default: '3',
    doc: 'impressions without interaction after which an item is demoted for a user',
  },
  {
    name: 'RECSYS_RATE_LIMIT_PER_S',
    default: '50',
    doc: 'feed requests per second one user (token) may make',
  },
  {
    name: 'RECSYS_MODEL_POLL_MS',
    default: '10000',
    doc: 'how often the server checks the registry for a new champion, ms',
  },
  {
    name: 'RECSYS_LIVE_COALESCE_MS',
    default: '20',
    doc: 'feature changes of one user within this window make one live push, ms',
  },
  {
    name: 'RECSYS_SERVING_MAX_IN_FLIGHT',
    default: '128',
    doc: 'feed requests one server process works on at once; beyond, 503 with Retry-After (load shedding)',
  },
  {
    name: 'RECSYS_SERVING_CATALOG_TTL_MS',
    default: '60000',
    doc: "how old the server's copy of an item's catalog facts gets before it is read again without a change message, ms (each item between half and all of it; changes arrive at once over `recsys:catalog:changed`)",
  },
  {
    name: 'RECSYS_SERVED_LINGER_MS',
    default: '50',
    doc: 'how long the server gathers served-feed records into one Kafka batch, ms (off the request path)',
  },
  {
    name: 'RECSYS_SERVING_WORKERS',
    default: '1',
    doc: 'server processes sharing the port (SO_REUSEPORT); each keeps its own model and sockets; `/metrics` answers for all',
  },
  {
    name: 'RECSYS_WS_MAX_BUFFERED_BYTES',
    default: '1048576',
    doc: 'a socket with more unsent bytes than this gets no new frames (superseded ones are dropped)',
  },
  {
    name: 'RECSYS_HEALTH_TIMEOUT_MS',
    default: '2000',
    doc: 'how long one dependency health check may take, ms',
  },
  {
    name: 'RECSYS_LOCAL_DIR',
    default: '.local',
    doc: 'deploy/local: data, logs and pid files (relative to the checkout)',
  },
  {
    name: 'RECSYS_CACHE_DIR',
    default: '~/.cache/recsys',
    doc: 'deploy/local: downloaded distributions, shared by checkouts',
  },
  {
    name: 'RECSYS_LOCAL_SERVICES',
    default: 'kafka,registry,redis,mosquitto,elasticsearch,prometheus,alertmanager',
    doc: 'deploy/local: services `up` starts',
  },
  {
    name: 'RECSYS_MAVEN_URL',
    default: 'https://repo.maven.apache.org/maven2',
    doc: 'deploy/local: Maven repository the registry and Elasticsearch archives come from (Kafka jars: Maven settings)',
  },
  {
    name: 'RECSYS_START_TIMEOUT_MS',
    default: '120000',
    doc: 'deploy/local: readiness wait per service, ms',
  },
];
