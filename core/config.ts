/**
 * The one place configuration enters the stack. Every address, port, topic and tuning knob is an
 * environment variable with a documented default that points at the services `deploy/local`
 * starts. `loadConfig(env)` validates all of them once and returns a frozen, fully-defaulted
 * object; an invalid value fails at start-up with the variable's name.
 *
 * @example
 *   const config = loadConfig(process.env);
 *   const kafka = createKafka(config.kafka, logger);
 */
import { ConfigError } from './errors.js';
import { redisTarget, type RedisTarget } from './redis-url.js';
import { trendingSettings, type TrendingConfig } from './config-trending.js';
import { deepFreeze, reader, type Env, type Reader } from './config-reader.js';
import { type HttpConfig, kindPorts } from './ports.js';
import { kafkaSasl, type KafkaSasl, replication } from './config-kafka.js';
import { featureSettings, type FeaturesConfig } from './config-features.js';

export type { TrendingConfig };
export type { KafkaSasl } from './config-kafka.js';
export { EVENT_TYPE_NAMES, type FeaturesConfig } from './config-features.js';
import {
  type AuthConfig,
  authSettings,
  bridgeClientId,
  environmentOf,
  refusePublishedSecrets,
} from './credentials.js';

export type { AuthConfig } from './credentials.js';

export interface KafkaConfig {
  brokers: string[];
  clientId: string;
  /** null: no SASL (the local plain backbone). */
  sasl: KafkaSasl | null;
  topics: { events: string; dlq: string; served: string; items: string };
  partitions: number;
  /** Replicas of a topic the stack creates; -1: the broker's default. */
  replicationFactor: number;
  /** `min.insync.replicas` of a topic the stack creates; 0: the broker's default. */
  minInsyncReplicas: number;
}

export interface MqttConfig {
  /** The device listener (devices publish there; their client id is their username). */
  url: string;
  /** The bridge listener (only the bridge account may connect). */
  bridgeUrl: string;
  username: string;
  password: string;
  clientId: string;
  sessionExpirySec: number;
  shareGroup: string;
  topicPrefix: string;
  receiveMaximum: number;
}

export interface IngestConfig {
  maxEventBytes: number;
  maxBatchEvents: number;
  maxPastMs: number;
  maxFutureMs: number;
  lingerMs: number;
  maxKafkaBatch: number;
  maxKafkaBatchBytes: number;
  httpTimeoutMs: number;
  maxQueuedBytes: number;
  dlqTimeoutMs: number;
  recentEvents: number;
}

export interface ConsumerConfig {
  maxWaitMs: number;
  minBytes: number;
  chunkSize: number;
  concurrency: number;
  commitIntervalMs: number;
  sessionTimeoutMs: number;
  /** How often lag is read from Kafka whether or not records arrive, ms (0 = never). */
  lagPollMs: number;
  /** Attempts a single failing record gets before it is dead-lettered. */
  poisonAttempts: number;
  /** Attempts of a chunk failing with Redis OOM or an unknown error before it is split. */
  oomAttempts: number;
  groups: {
    features: string;
    indexer: string;
    lake: string;
    catalog: string;
    impressions: string;
    attribution: string;
  };
  /** Attribution role: an event counts for a feed served at most this long before it, ms. */
  attributionWindowMs: number;
}

export interface IndexerConfig {
  namespace: string;
  bulkDocs: number;
  maxInFlight: number;
}

export interface LakeConfig {
  dir: string;
  rollRecords: number;
  rollMs: number;
}

export interface BatchConfig {
  dir: string;
  /** `file://<dir>` or an MLflow tracking URL (`http(s)://`). */
  registryUrl: string;
  modelName: string;
  minNdcg: number;
  pythonVenv: string;
  /** Engine of the ETL and candidate SQL (`batch/sql-engine.ts`). */
  engine: 'duckdb' | 'spark';
  /** Spark master of the spark engine, e.g. `local[2]` or `spark://host:7077`. */
  sparkMaster: string;
  candidatesPerUser: number;
  neighboursPerItem: number;
  /** Items (the most interacted) the EASE weights are fitted over; 0 fits none. */
  easeItems: number;
  /** EASE's L2 penalty (lambda). */
  easeLambda: number;
  keepVersions: number;
  /** Cron expression, or '' for none. */
  schedule: string;
  /** Bearer token of the retrain webhook ('' = unset; `--serve` refuses to start then). */
  retrainToken: string;
}

export interface ServingConfig {
  jwtSecret: string;
  jwtIssuer: string;
  corsOrigins: string[];
  defaultLimit: number;
  maxLimit: number;
  candidates: number;
  /** The user's recent items whose co-visitation neighbours are candidates (the mix's seeds). */
  seedItems: number;
  /** Users whose batch candidates are kept in memory per process (0 = none). */
  userCache: number;
  maxPerCategory: number;
  fatigueImpressions: number;
  /** Expected share of a feed's slots given to new items (exploration); their age bound, ms. */
  exploreShare: number;
  newItemAgeMs: number;
  /** Share of served records that carry the candidates' features (training rows). */
  logFeaturesShare: number;
  rateLimitPerSec: number;
  modelPollMs: number;
  liveCoalesceMs: number;
  wsMaxBufferedBytes: number;
  /** Live sockets per user across processes; per process; upgrade shedding (ms); lease (ms). */
  wsMaxPerUser: number;
  wsMaxSockets: number;
  wsShedLagMs: number;
  wsLeaseMs: number;
  servedLingerMs: number;
  /** Age at which cached catalog facts are read again without a change message, ms. */
  catalogTtlMs: number;
  /** A feed not built within this time gets the fallback (the last popular list), ms. */
  feedDeadlineMs: number;
  maxInFlight: number;
  workers: number;
}

export interface LocalConfig {
  dir: string;
  /** Redis ACL users and Kafka SASL/SCRAM, credentials generated into `<dir>/secrets`. */
  secureBackbone: boolean;
  cacheDir: string;
  services: string[];
  startTimeoutMs: number;
  mavenUrl: string;
  prometheusPort: number;
  alertmanagerPort: number;
  /** Cluster profile: the first broker's port (3 brokers, controllers at +100). */
  clusterKafkaPort: number;
  /** Cluster profile: the first Redis Cluster node's port (6 nodes, bus at +10000). */
  clusterRedisPort: number;
}

export interface Config {
  /** `development` accepts the published development secrets; `production` refuses them. */
  environment: 'production' | 'development';
  logLevel: string;
  kafka: KafkaConfig;
  registry: { url: string };
  /** `cluster`: the seed nodes when RECSYS_REDIS_URL names a Redis Cluster (`core/redis-url.ts`). */
  redis: RedisTarget;
  /** `apiKey`: the encoded API key, '' for none. */
  elasticsearch: { url: string; apiKey: string };
  mqtt: MqttConfig;
  http: HttpConfig;
  ingest: IngestConfig;
  consumer: ConsumerConfig;
  features: FeaturesConfig;
  trending: TrendingConfig;
  indexer: IndexerConfig;
  lake: LakeConfig;
  batch: BatchConfig;
  serving: ServingConfig;
  auth: AuthConfig;
  healthTimeoutMs: number;
  shutdownTimeoutMs: number;
  local: LocalConfig;
}

/** Reads, validates and freezes the whole configuration. Throws {@link ConfigError}. */
export function loadConfig(env: Env = process.env): Readonly<Config> {
  const r = reader(env);
  const config: Config = {
    environment: environmentOf(r),
    ...connections(r),
    ...streamSettings(r),
    ...batchSettings(r),
    ...servingSettings(r),
    ...authSettings(r),
  };
  if (config.environment !== 'development') {
    refusePublishedSecrets({
      RECSYS_JWT_SECRET: [config.serving.jwtSecret],
      RECSYS_MQTT_PASSWORD: [config.mqtt.password],
      RECSYS_KAFKA_PASSWORD: config.kafka.sasl ? [config.kafka.sasl.password] : [],
      RECSYS_RETRAIN_TOKEN: [config.batch.retrainToken],
      RECSYS_INGEST_TOKENS: config.auth.ingestTokens,
    });
  }
  return deepFreeze(config);
}

/** Addresses of the backbone, HTTP, ingest limits and health timeouts. */
function connections(
  r: Reader,
): Pick<
  Config,
  | 'logLevel'
  | 'kafka'
  | 'registry'
  | 'redis'
  | 'elasticsearch'
  | 'mqtt'
  | 'http'
  | 'ingest'
  | 'healthTimeoutMs'
  | 'shutdownTimeoutMs'
> {
  const { str, int, url, list } = r;
  return {
    logLevel: str('RECSYS_LOG_LEVEL'),
    kafka: {
      brokers: list('RECSYS_KAFKA_BROKERS'),
      clientId: str('RECSYS_KAFKA_CLIENT_ID'),
      sasl: kafkaSasl(r),
      topics: {
        events: str('RECSYS_TOPIC_EVENTS'),
        dlq: str('RECSYS_TOPIC_DLQ'),
        served: str('RECSYS_TOPIC_SERVED'),
        items: str('RECSYS_TOPIC_ITEMS'),
      },
      partitions: int('RECSYS_TOPIC_PARTITIONS', 1, 1024),
      ...replication(r),
    },
    registry: { url: url('RECSYS_SCHEMA_REGISTRY_URL', ['http:', 'https:']) },
    redis: redisTarget(str('RECSYS_REDIS_URL')),
    elasticsearch: {
      url: url('RECSYS_ES_URL', ['http:', 'https:']),
      apiKey: str('RECSYS_ES_API_KEY'),
    },
    mqtt: {
      url: url('RECSYS_MQTT_URL', ['mqtt:', 'mqtts:', 'ws:', 'wss:']),
      bridgeUrl: url('RECSYS_MQTT_BRIDGE_URL', ['mqtt:', 'mqtts:']),
      username: str('RECSYS_MQTT_USERNAME'),
      password: str('RECSYS_MQTT_PASSWORD'),
      clientId: bridgeClientId(str('RECSYS_MQTT_CLIENT_ID')),
      sessionExpirySec: int('RECSYS_MQTT_SESSION_EXPIRY_S', 0, 0xffffffff),
      shareGroup: str('RECSYS_MQTT_SHARE_GROUP'),
      topicPrefix: str('RECSYS_MQTT_TOPIC_PREFIX').replace(/\/+$/, ''),
      receiveMaximum: int('RECSYS_MQTT_RECEIVE_MAXIMUM', 1, 65535),
    },
    http: {
      host: str('RECSYS_HTTP_HOST'),
      port: str('RECSYS_HTTP_PORT') === '' ? null : int('RECSYS_HTTP_PORT', 0, 65535),
      ports: kindPorts(r),
      maxBodyBytes: int('RECSYS_HTTP_MAX_BODY_BYTES', 1024, 1_000_000),
    },
    ingest: {
      maxEventBytes: int('RECSYS_INGEST_MAX_EVENT_BYTES', 256, 1 << 20),
      maxBatchEvents: int('RECSYS_INGEST_MAX_BATCH_EVENTS', 1, 10_000),
      maxPastMs: int('RECSYS_INGEST_MAX_PAST_MS', 0),
      maxFutureMs: int('RECSYS_INGEST_MAX_FUTURE_MS', 0),
      lingerMs: int('RECSYS_INGEST_LINGER_MS', 0, 1000),
      maxKafkaBatch: int('RECSYS_INGEST_MAX_BATCH', 1, 10_000),
      maxKafkaBatchBytes: int('RECSYS_INGEST_MAX_BATCH_BYTES', 1024, 64 << 20),
      httpTimeoutMs: int('RECSYS_INGEST_HTTP_TIMEOUT_MS', 100),
      maxQueuedBytes: int('RECSYS_INGEST_MAX_QUEUED_BYTES', 1 << 20, 2 ** 40),
      dlqTimeoutMs: int('RECSYS_INGEST_DLQ_TIMEOUT_MS', 100, 600_000),
      recentEvents: int('RECSYS_INGEST_RECENT_EVENTS', 0, 10_000_000),
    },
    healthTimeoutMs: int('RECSYS_HEALTH_TIMEOUT_MS', 50, 60_000),
    shutdownTimeoutMs: int('RECSYS_SHUTDOWN_TIMEOUT_MS', 100, 3_600_000),
  };
}

/** The stream roles: consumer tuning, features, trending, the indexer and the lake. */
function streamSettings(
  r: Reader,
): Pick<Config, 'consumer' | 'features' | 'trending' | 'indexer' | 'lake'> {
  const { str, int } = r;
  return {
    consumer: {
      maxWaitMs: int('RECSYS_CONSUMER_MAX_WAIT_MS', 0, 60_000),
      minBytes: int('RECSYS_CONSUMER_MIN_BYTES', 1, 64 << 20),
      chunkSize: int('RECSYS_CONSUMER_CHUNK_SIZE', 1, 100_000),
      concurrency: int('RECSYS_CONSUMER_CONCURRENCY', 1, 1024),
      commitIntervalMs: int('RECSYS_CONSUMER_COMMIT_INTERVAL_MS', 10, 600_000),
      sessionTimeoutMs: int('RECSYS_CONSUMER_SESSION_TIMEOUT_MS', 6000, 600_000),
      lagPollMs: int('RECSYS_LAG_POLL_MS', 0, 3_600_000),
      poisonAttempts: int('RECSYS_CONSUMER_POISON_ATTEMPTS', 1, 100),
      oomAttempts: int('RECSYS_CONSUMER_OOM_ATTEMPTS', 1, 10_000),
      groups: {
        features: str('RECSYS_GROUP_FEATURES'),
        indexer: str('RECSYS_GROUP_INDEXER'),
        lake: str('RECSYS_GROUP_LAKE'),
        catalog: str('RECSYS_GROUP_CATALOG'),
        impressions: str('RECSYS_GROUP_IMPRESSIONS'),
        attribution: str('RECSYS_GROUP_ATTRIBUTION'),
      },
      attributionWindowMs: int('RECSYS_ATTRIBUTION_WINDOW_MS', 1000, 7 * 86_400_000),
    },
    features: featureSettings(r),
    trending: trendingSettings(r),
    indexer: {
      namespace: str('RECSYS_ES_NAMESPACE'),
      bulkDocs: int('RECSYS_INDEXER_BULK_DOCS', 1, 100_000),
      maxInFlight: int('RECSYS_INDEXER_MAX_INFLIGHT', 1, 64),
    },
    lake: {
      dir: str('RECSYS_LAKE_DIR'),
      rollRecords: int('RECSYS_LAKE_ROLL_RECORDS', 1),
      rollMs: int('RECSYS_LAKE_ROLL_MS', 100),
    },
  };
}

/** The batch and the local stack. */
function batchSettings(r: Reader): Pick<Config, 'batch' | 'local'> {
  const { str, int, url, list, home } = r;
  return {
    batch: {
      dir: str('RECSYS_BATCH_DIR'),
      registryUrl: (() => {
        const mlflow = str('MLFLOW_TRACKING_URI');
        if (mlflow) return url('MLFLOW_TRACKING_URI', ['http:', 'https:']);
        return url('RECSYS_MODEL_REGISTRY_URL', ['file:', 'http:', 'https:']);
      })(),
      modelName: str('RECSYS_MODEL_NAME'),
      minNdcg: r.num('RECSYS_MODEL_MIN_NDCG', 0, 1),
      pythonVenv: str('RECSYS_PYTHON_VENV').replace(/^~(?=\/|$)/, home),
      engine: (() => {
        const engine = str('RECSYS_BATCH_ENGINE');
        if (engine !== 'duckdb' && engine !== 'spark')
          throw new ConfigError('RECSYS_BATCH_ENGINE', `expected duckdb or spark, got "${engine}"`);
        return engine;
      })(),
      sparkMaster: str('RECSYS_SPARK_MASTER'),
      candidatesPerUser: int('RECSYS_CANDIDATES_PER_USER', 1, 10_000),
      neighboursPerItem: int('RECSYS_NEIGHBOURS_PER_ITEM', 1, 10_000),
      easeItems: int('RECSYS_BATCH_EASE_ITEMS', 0, 20_000),
      easeLambda: r.num('RECSYS_BATCH_EASE_LAMBDA', 0.001, 1e9),
      keepVersions: int('RECSYS_CANDIDATES_KEEP_VERSIONS', 1, 100),
      schedule: str('RECSYS_BATCH_SCHEDULE'),
      retrainToken: str('RECSYS_RETRAIN_TOKEN'),
    },
    local: {
      dir: str('RECSYS_LOCAL_DIR'),
      secureBackbone: r.flag('RECSYS_SECURE_BACKBONE'),
      cacheDir: str('RECSYS_CACHE_DIR').replace(/^~(?=\/|$)/, home),
      services: list('RECSYS_LOCAL_SERVICES'),
      startTimeoutMs: int('RECSYS_START_TIMEOUT_MS', 1000),
      mavenUrl: url('RECSYS_MAVEN_URL', ['http:', 'https:']),
      prometheusPort: int('RECSYS_PROMETHEUS_PORT', 1, 65535),
      alertmanagerPort: int('RECSYS_ALERTMANAGER_PORT', 1, 65535),
      // Ports above these are taken too: brokers +1, +2 and controllers +100..+102; Redis
      // nodes +1..+5 and each one's cluster bus at +10000.
      clusterKafkaPort: int('RECSYS_CLUSTER_KAFKA_PORT', 1, 65535 - 102),
      clusterRedisPort: int('RECSYS_CLUSTER_REDIS_PORT', 1, 65535 - 10005),
    },
  };
}

/** The feed server. */
function servingSettings(r: Reader): Pick<Config, 'serving'> {
  const { str, int, num, list } = r;
  return {
    serving: {
      jwtSecret: (() => {
        const secret = str('RECSYS_JWT_SECRET');
        if (secret.length < 32)
          throw new ConfigError('RECSYS_JWT_SECRET', 'at least 32 characters');
        return secret;
      })(),
      jwtIssuer: str('RECSYS_JWT_ISSUER'),
      corsOrigins: list('RECSYS_CORS_ORIGINS'),
      defaultLimit: int('RECSYS_FEED_DEFAULT_LIMIT', 1, 1000),
      maxLimit: int('RECSYS_FEED_MAX_LIMIT', 1, 1000),
      candidates: int('RECSYS_FEED_CANDIDATES', 1, 10_000),
      seedItems: int('RECSYS_FEED_SEED_ITEMS', 1, 100),
      userCache: int('RECSYS_FEED_USER_CACHE', 0, 10_000_000),
      maxPerCategory: int('RECSYS_FEED_MAX_PER_CATEGORY', 1, 1000),
      fatigueImpressions: int('RECSYS_FEED_FATIGUE_IMPRESSIONS', 0, 1000),
      exploreShare: num('RECSYS_FEED_EXPLORE_SHARE', 0, 0.5),
      newItemAgeMs: int('RECSYS_FEED_NEW_ITEM_AGE_MS', 1000),
      logFeaturesShare: num('RECSYS_FEED_LOG_FEATURES_SHARE', 0, 1),
      rateLimitPerSec: int('RECSYS_RATE_LIMIT_PER_S', 1, 1_000_000),
      modelPollMs: int('RECSYS_MODEL_POLL_MS', 100),
      liveCoalesceMs: int('RECSYS_LIVE_COALESCE_MS', 0, 10_000),
      wsMaxBufferedBytes: int('RECSYS_WS_MAX_BUFFERED_BYTES', 1024),
      wsMaxPerUser: int('RECSYS_WS_MAX_PER_USER', 1, 100_000),
      wsMaxSockets: int('RECSYS_WS_MAX_SOCKETS', 1, 10_000_000),
      wsShedLagMs: int('RECSYS_WS_SHED_LAG_MS', 0, 60_000),
      wsLeaseMs: int('RECSYS_WS_LEASE_MS', 1000, 3_600_000),
      servedLingerMs: int('RECSYS_SERVED_LINGER_MS', 0, 10_000),
      catalogTtlMs: int('RECSYS_SERVING_CATALOG_TTL_MS', 100, 86_400_000),
      feedDeadlineMs: int('RECSYS_FEED_DEADLINE_MS', 1, 600_000),
      maxInFlight: int('RECSYS_SERVING_MAX_IN_FLIGHT', 1, 1_000_000),
      workers: int('RECSYS_SERVING_WORKERS', 1, 64),
    },
  };
}

/** {@link loadConfig} for an entry point: a bad value exits 1 with one line (code, variable). */
export function loadConfigOrExit(env: Env = process.env): Readonly<Config> {
  try {
    return loadConfig(env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`recsys: ${err.code}: ${err.message}\n`);
    process.exit(1);
  }
}
