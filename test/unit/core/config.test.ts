import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EVENT_TYPE_NAMES, loadConfig } from '../../../core/config.js';
import { VARIABLES } from '../../../core/config-variables.js';
import { ConfigError } from '../../../core/errors.js';
import { EVENT_TYPES } from '../../../schemas/index.js';

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return dir;
}

describe('loadConfig', () => {
  it('fills every value from documented defaults and freezes the result', () => {
    const config = loadConfig({ RECSYS_ENV: 'development' });
    assert.deepEqual(config.kafka.brokers, ['127.0.0.1:9092']);
    assert.equal(config.kafka.topics.events, 'recsys.events.v1');
    assert.equal(config.ingest.maxEventBytes, 16384);
    assert.equal(config.ingest.maxQueuedBytes, 64 << 20);
    assert.equal(config.ingest.dlqTimeoutMs, 5000);
    assert.equal(config.shutdownTimeoutMs, 10_000);
    assert.ok(Object.isFrozen(config) && Object.isFrozen(config.kafka.topics));
    assert.throws(() => {
      (config.kafka as { partitions: number }).partitions = 1;
    }, TypeError);
  });

  it('reads overrides and trims list entries and trailing slashes', () => {
    const config = loadConfig({
      RECSYS_ENV: 'development',
      RECSYS_KAFKA_BROKERS: 'a:1, b:2',
      RECSYS_SCHEMA_REGISTRY_URL: 'http://reg:8081/apis/ccompat/v7/',
      RECSYS_HTTP_PORT: '0',
    });
    assert.deepEqual(config.kafka.brokers, ['a:1', 'b:2']);
    assert.equal(config.registry.url, 'http://reg:8081/apis/ccompat/v7');
    assert.equal(config.http.port, 0);
  });

  it('runs the batch SQL on DuckDB unless told spark, with the Spark master given', () => {
    const dflt = loadConfig({ RECSYS_ENV: 'development' }).batch;
    assert.deepEqual([dflt.engine, dflt.sparkMaster], ['duckdb', 'local[2]']);
    const spark = loadConfig({
      RECSYS_ENV: 'development',
      RECSYS_BATCH_ENGINE: 'spark',
      RECSYS_SPARK_MASTER: 'spark://10.0.0.5:7077',
    }).batch;
    assert.deepEqual([spark.engine, spark.sparkMaster], ['spark', 'spark://10.0.0.5:7077']);
  });

  it('names the variable when a value is invalid', () => {
    for (const [name, value] of [
      ['RECSYS_HTTP_PORT', '70000'],
      ['RECSYS_TOPIC_PARTITIONS', 'six'],
      ['RECSYS_REDIS_URL', 'http://x'],
      ['RECSYS_ES_URL', 'not a url'],
      ['RECSYS_KAFKA_BROKERS', ' , '],
      ['RECSYS_INGEST_MAX_QUEUED_BYTES', '65536'],
      ['RECSYS_SHUTDOWN_TIMEOUT_MS', '0'],
      ['RECSYS_BATCH_ENGINE', 'presto'],
    ] as const) {
      assert.throws(
        () => loadConfig({ RECSYS_ENV: 'development', [name]: value }),
        (err: unknown) =>
          err instanceof ConfigError && err.variable === name && err.message.startsWith(name),
        name,
      );
    }
  });

  it("takes the consumed event types from the schema's types, and refuses others", () => {
    assert.deepEqual([...EVENT_TYPE_NAMES].sort(), [...EVENT_TYPES].sort());
    assert.deepEqual(
      loadConfig({ RECSYS_ENV: 'development', RECSYS_FEATURES_CONSUMED_TYPES: 'purchase' }).features
        .consumedTypes,
      ['purchase'],
    );
    assert.throws(
      () =>
        loadConfig({ RECSYS_ENV: 'development', RECSYS_FEATURES_CONSUMED_TYPES: 'purchase,wish' }),
      (err: unknown) =>
        err instanceof ConfigError && err.variable === 'RECSYS_FEATURES_CONSUMED_TYPES',
    );
  });

  it('refuses a published secret outside development, naming the variable', () => {
    const random = (): string => crypto.randomUUID() + crypto.randomUUID();
    const own = {
      RECSYS_JWT_SECRET: random(),
      RECSYS_MQTT_PASSWORD: random(),
      RECSYS_RETRAIN_TOKEN: random(),
      RECSYS_INGEST_TOKENS: `${random()},${random()}`,
    };
    const refused = (env: Record<string, string>, variable: string): void =>
      assert.throws(
        () => loadConfig(env),
        (err: unknown) =>
          err instanceof ConfigError &&
          err.code === 'RECSYS_CONFIG_PUBLISHED_SECRET' &&
          err.variable === variable &&
          err.message.startsWith(`${variable}: `),
        variable,
      );
    // Nothing set: the development default of the JWT secret is published.
    refused({}, 'RECSYS_JWT_SECRET');
    refused({ RECSYS_ENV: 'production' }, 'RECSYS_JWT_SECRET');
    refused({ ...own, RECSYS_MQTT_PASSWORD: '' }, 'RECSYS_MQTT_PASSWORD');
    // Placeholders, as example env files ship them.
    refused(
      { ...own, RECSYS_JWT_SECRET: 'change-me-to-at-least-32-random-characters' },
      'RECSYS_JWT_SECRET',
    );
    refused({ ...own, RECSYS_RETRAIN_TOKEN: 'change-me' }, 'RECSYS_RETRAIN_TOKEN');
    refused(
      { ...own, RECSYS_INGEST_TOKENS: `${random()},change-me-to-24-or-more-random-characters` },
      'RECSYS_INGEST_TOKENS',
    );
    // Secrets of one's own pass; so do the defaults in development, and an unset retrain token.
    assert.equal(loadConfig(own).environment, 'production');
    assert.equal(loadConfig({ ...own, RECSYS_RETRAIN_TOKEN: '' }).batch.retrainToken, '');
    const dev = loadConfig({
      RECSYS_ENV: 'development',
      RECSYS_INGEST_TOKENS: 'change-me-0123456789abcdef',
    });
    assert.equal(dev.environment, 'development');
    assert.equal(dev.mqtt.password, 'bridge-local-secret');
    assert.throws(
      () => loadConfig({ ...own, RECSYS_ENV: 'staging' }),
      (err: unknown) => err instanceof ConfigError && err.variable === 'RECSYS_ENV',
    );
  });

  it("requires a '/' in the bridge's MQTT client id, which no userId (device client id) has", () => {
    const dev = { RECSYS_ENV: 'development' };
    assert.equal(loadConfig(dev).mqtt.clientId, 'recsys/bridge-1');
    assert.throws(
      () => loadConfig({ ...dev, RECSYS_MQTT_CLIENT_ID: 'recsys-bridge-1' }),
      (err: unknown) => err instanceof ConfigError && err.variable === 'RECSYS_MQTT_CLIENT_ID',
    );
  });

  it("takes topic replication from config: the broker's defaults unless set, and consistent", () => {
    const dev = { RECSYS_ENV: 'development' };
    const plain = loadConfig(dev).kafka;
    assert.equal(plain.replicationFactor, -1);
    assert.equal(plain.minInsyncReplicas, 0);
    const cluster = loadConfig({
      ...dev,
      RECSYS_KAFKA_REPLICATION_FACTOR: '3',
      RECSYS_KAFKA_MIN_INSYNC_REPLICAS: '2',
    }).kafka;
    assert.equal(cluster.replicationFactor, 3);
    assert.equal(cluster.minInsyncReplicas, 2);
    const refused = (env: Record<string, string>, variable: string): void =>
      assert.throws(
        () => loadConfig({ ...dev, ...env }),
        (err: unknown) => err instanceof ConfigError && err.message.includes(variable),
      );
    refused({ RECSYS_KAFKA_REPLICATION_FACTOR: '0' }, 'RECSYS_KAFKA_REPLICATION_FACTOR');
    refused({ RECSYS_KAFKA_REPLICATION_FACTOR: '-2' }, 'RECSYS_KAFKA_REPLICATION_FACTOR');
    refused(
      { RECSYS_KAFKA_REPLICATION_FACTOR: '2', RECSYS_KAFKA_MIN_INSYNC_REPLICAS: '3' },
      'RECSYS_KAFKA_MIN_INSYNC_REPLICAS',
    );
    // With the broker's default replication factor the broker judges min.insync.replicas.
    assert.equal(
      loadConfig({ ...dev, RECSYS_KAFKA_MIN_INSYNC_REPLICAS: '2' }).kafka.minInsyncReplicas,
      2,
    );
  });

  it('expands ~ in the cache dir from HOME', () => {
    assert.equal(
      loadConfig({ RECSYS_ENV: 'development', HOME: '/home/x' }).local.cacheDir,
      '/home/x/.cache/recsys',
    );
  });

  it('is documented in the README with the same defaults', () => {
    const readme = readFileSync(join(repoRoot(), 'README.md'), 'utf8');
    for (const v of VARIABLES) {
      const row = readme
        .split('\n')
        .find((line) => new RegExp(`^\\|\\s*\`${v.name}\`\\s*\\|`).test(line));
      assert.ok(row, `README has no row for ${v.name}`);
      assert.ok(
        v.default === '' ? row.includes('(unset)') : row.includes(`\`${v.default}\``),
        `README row for ${v.name} does not show its default ${v.default}`,
      );
    }
  });
});
