/** Backbone connections: logging, Kafka and its topics, schema registry, Redis, Elasticsearch, MQTT. */
import type { VariableDoc } from './doc.js';

export const BACKBONE: readonly VariableDoc[] = [
  { name: 'RECSYS_LOG_LEVEL', default: 'info', doc: 'pino log level' },
  {
    name: 'RECSYS_ENV',
    default: 'production',
    doc: 'development: a process accepts the published development defaults of the secrets (RECSYS_JWT_SECRET, RECSYS_MQTT_PASSWORD); production: it refuses them, naming the variable',
  },
  {
    name: 'RECSYS_KAFKA_BROKERS',
    default: '127.0.0.1:9092',
    doc: 'comma-separated Kafka bootstrap brokers',
  },
  { name: 'RECSYS_KAFKA_CLIENT_ID', default: 'recsys', doc: 'Kafka client id prefix' },
  {
    name: 'RECSYS_KAFKA_SASL_MECHANISM',
    default: '',
    doc: 'SASL mechanism of every Kafka client: scram-sha-256, scram-sha-512 or plain (unset: no SASL)',
  },
  {
    name: 'RECSYS_KAFKA_USERNAME',
    default: '',
    doc: 'Kafka SASL user (with RECSYS_KAFKA_SASL_MECHANISM)',
  },
  {
    name: 'RECSYS_KAFKA_PASSWORD',
    default: '',
    doc: 'Kafka SASL password (with RECSYS_KAFKA_SASL_MECHANISM)',
  },
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
    name: 'RECSYS_KAFKA_REPLICATION_FACTOR',
    default: '-1',
    doc: "replicas of each topic the stack creates; an existing topic with fewer is raised by partition reassignment (-1: the broker's default.replication.factor; the cluster profile: 3)",
  },
  {
    name: 'RECSYS_KAFKA_MIN_INSYNC_REPLICAS',
    default: '0',
    doc: "min.insync.replicas set on each topic the stack creates, and on an existing one whose replicas carry it, so an acks=all write needs that many replicas (0: the broker's default; the cluster profile: 2)",
  },
  {
    name: 'RECSYS_SCHEMA_REGISTRY_URL',
    default: 'http://127.0.0.1:8081/apis/ccompat/v7',
    doc: 'Confluent-compatible schema registry base URL',
  },
  {
    name: 'RECSYS_REDIS_URL',
    default: 'redis://127.0.0.1:6379',
    doc: 'Redis: redis://[user:password@]host:port, or a Redis Cluster by its seed nodes: redis-cluster://[user:password@]host1:port1,host2:port2 (database 0 only; rediss-cluster:// for TLS)',
  },
  { name: 'RECSYS_ES_URL', default: 'http://127.0.0.1:9200', doc: 'Elasticsearch URL' },
  {
    name: 'RECSYS_ES_API_KEY',
    default: '',
    doc: 'Elasticsearch API key (the encoded form), sent as Authorization: ApiKey (unset: none)',
  },
  {
    name: 'RECSYS_MQTT_URL',
    default: 'mqtt://127.0.0.1:1883',
    doc: "the broker's device listener: devices publish there, each with its username as client id",
  },
  {
    name: 'RECSYS_MQTT_BRIDGE_URL',
    default: 'mqtt://127.0.0.1:1884',
    doc: "the broker's bridge listener, where only the bridge account may connect (loopback in deploy/local, unpublished in compose)",
  },
  { name: 'RECSYS_MQTT_USERNAME', default: 'bridge', doc: 'MQTT account of the ingest bridge' },
  {
    name: 'RECSYS_MQTT_PASSWORD',
    default: 'bridge-local-secret',
    doc: 'password of that account; the default is published: RECSYS_ENV=development only (deploy/local generates one)',
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
    default: 'recsys/bridge-1',
    doc: 'MQTT client id of this bridge: stable across restarts (its session holds unacknowledged events), distinct per bridge; it holds a "/", which no userId and so no device client id can',
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
];
