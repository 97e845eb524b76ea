/** Serving side: auth, feed sizes, live feed, workers, health; and the deploy/local settings. */
import type { VariableDoc } from './doc.js';

export const SERVING: readonly VariableDoc[] = [
  {
    name: 'RECSYS_JWT_SECRET',
    default: 'recsys-local-dev-secret-change-me-0123456789',
    doc: 'HS256 secret of the feed tokens (sub = userId); at least 32 characters; the default is published: RECSYS_ENV=development only (deploy/local generates one)',
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
    name: 'RECSYS_FEED_SEED_ITEMS',
    default: '20',
    doc: "the user's recent items whose co-visitation neighbours are candidates, the newest weighted most (0.8^position); training uses the same",
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
    default: '0',
    doc: 'impressions without interaction after which an item is demoted for a user; 0 = off (on replayed real logs every threshold cost quality: bench/README.md)',
  },
  {
    name: 'RECSYS_FEED_EXPLORE_SHARE',
    default: '0.02',
    doc: "expected share of feed slots (from the third on) given to new items of the user's top category, or of the catalog, that the user has not consumed; 0 = off",
  },
  {
    name: 'RECSYS_FEED_LOG_FEATURES_SHARE',
    default: '0.05',
    doc: "share of served records that carry every candidate with the reranker's features as served; the batch trains on them (about 22 KB each; 0 = off)",
  },
  {
    name: 'RECSYS_FEED_NEW_ITEM_AGE_MS',
    default: '604800000',
    doc: 'catalog items created within this age are new: explored (RECSYS_FEED_EXPLORE_SHARE), ms',
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
    name: 'RECSYS_FEED_DEADLINE_MS',
    default: '1000',
    doc: 'a feed not built within this time (Redis failing over or slow) is answered with the last popular (before any batch: trending) list from memory, model version `fallback`, ms',
  },
  {
    name: 'RECSYS_SERVING_MAX_IN_FLIGHT',
    default: '128',
    doc: 'feeds one server process works on at once (requests, socket upgrades, live pushes); beyond, 503 with Retry-After (load shedding)',
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
    name: 'RECSYS_WS_MAX_PER_USER',
    default: '8',
    doc: 'live sockets one user may hold across all serving processes (leases in Redis); one more is closed with 4429',
  },
  {
    name: 'RECSYS_WS_MAX_SOCKETS',
    default: '20000',
    doc: 'live sockets one server process holds; past it, upgrades get 503 with Retry-After',
  },
  {
    name: 'RECSYS_WS_SHED_LAG_MS',
    default: '200',
    doc: 'event-loop delay (smoothed over about 0.4 s) past which a server process answers upgrades 503 with Retry-After, ms (0 = off)',
  },
  {
    name: 'RECSYS_WS_LEASE_MS',
    default: '30000',
    doc: "how long a socket's per-user lease outlives its process's last renewal (a crashed worker's sockets stop counting after it), ms",
  },
  {
    name: 'RECSYS_HEALTH_TIMEOUT_MS',
    default: '2000',
    doc: 'how long one dependency health check may take, ms',
  },
  {
    name: 'RECSYS_SHUTDOWN_TIMEOUT_MS',
    default: '10000',
    doc: 'on SIGTERM/SIGINT a process finishes or hands back its work within this long, then exits: 0 clean, 1 a step failed, 124 out of time (work handed back), ms',
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
    name: 'RECSYS_SECURE_BACKBONE',
    default: '0',
    doc: 'deploy/local: 1 = Redis with ACL users, Kafka with SASL/SCRAM and ACLs, credentials made in .local/secrets',
  },
  {
    name: 'RECSYS_PROMETHEUS_PORT',
    default: '9090',
    doc: "deploy/local: Prometheus's port (on loopback)",
  },
  {
    name: 'RECSYS_ALERTMANAGER_PORT',
    default: '9094',
    doc: "deploy/local: Alertmanager's port (not its usual 9093: the local Kafka's controller listens on the broker port + 1)",
  },
  {
    name: 'RECSYS_CLUSTER_KAFKA_PORT',
    default: '19092',
    doc: 'deploy/local cluster profile: the first of its 3 Kafka brokers (then +1, +2); their controllers on these + 100',
  },
  {
    name: 'RECSYS_CLUSTER_REDIS_PORT',
    default: '7000',
    doc: 'deploy/local cluster profile: the first of its 6 Redis Cluster nodes (then +1 ... +5); cluster bus on these + 10000',
  },
  {
    name: 'RECSYS_START_TIMEOUT_MS',
    default: '120000',
    doc: 'deploy/local: readiness wait per service, ms',
  },
];
