import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../../core/config.js';
import {
  clusterEnv,
  clusterPorts,
  expandNames,
  parseProfile,
  profileServices,
} from '../../../deploy/local/profile.js';
import { KAFKA_NODES } from '../../../deploy/local/kafka-cluster.js';
import { REDIS_NODES, redisClusterUrl } from '../../../deploy/local/redis-cluster.js';
import type { StackContext } from '../../../deploy/local/service-def.js';

const config = loadConfig({ RECSYS_ENV: 'development' });
const ctx = { config } as StackContext;

describe('deploy/local profiles', () => {
  it('single is the default and keeps the services as they were', () => {
    assert.equal(parseProfile(undefined), 'single');
    assert.throws(() => parseProfile('big'), /unknown profile "big"/);
    assert.deepEqual(profileServices(config, 'single'), [
      'kafka',
      'registry',
      'redis',
      'mosquitto',
      'elasticsearch',
      'prometheus',
      'alertmanager',
    ]);
  });

  it('cluster puts 3 brokers and 6 Redis nodes in place of kafka and redis', () => {
    const names = profileServices(config, 'cluster');
    assert.deepEqual(names, [
      'kafka-1',
      'kafka-2',
      'kafka-3',
      'registry',
      'redis-1',
      'redis-2',
      'redis-3',
      'redis-4',
      'redis-5',
      'redis-6',
      'mosquitto',
      'elasticsearch',
      'prometheus',
      'alertmanager',
    ]);
    assert.deepEqual(expandNames('cluster', ['redis-2', 'kafka']), [
      'redis-2',
      'kafka-1',
      'kafka-2',
      'kafka-3',
    ]);
    assert.throws(() => expandNames('cluster', ['zookeeper']), /unknown service "zookeeper"/);
  });

  it('gives every node its own port from the two variables, clear of each other', () => {
    const c = loadConfig({
      RECSYS_ENV: 'development',
      RECSYS_CLUSTER_KAFKA_PORT: '22092',
      RECSYS_CLUSTER_REDIS_PORT: '22000',
    });
    const cc = { config: c } as StackContext;
    const kafka = Object.values(KAFKA_NODES).map((d) => d.port(cc));
    const redis = Object.values(REDIS_NODES).map((d) => d.port(cc));
    assert.deepEqual(kafka, [22092, 22093, 22094]);
    assert.deepEqual(redis, [22000, 22001, 22002, 22003, 22004, 22005]);
    assert.equal(
      redisClusterUrl(cc),
      'redis-cluster://127.0.0.1:22000,127.0.0.1:22001,127.0.0.1:22002,127.0.0.1:22003,127.0.0.1:22004,127.0.0.1:22005',
    );
    const lines = clusterPorts(cc).join('\n');
    assert.match(lines, /controllers :22192-22194/);
    assert.match(lines, /cluster bus :32000-32005/);
    // The defaults: clear of every single-profile port.
    const defaults = [
      ...Object.values(KAFKA_NODES).map((d) => [d.port(ctx), d.port(ctx) + 100]),
      ...Object.values(REDIS_NODES).map((d) => [d.port(ctx), d.port(ctx) + 10_000]),
    ].flat();
    for (const p of [9092, 9093, 8081, 6379, 1883, 1884, 9200, 9090, 9094, 8080, 8090, 8095])
      assert.ok(!defaults.includes(p), `cluster profile default takes :${p}`);
  });

  it('prints what the product needs to use the cluster', () => {
    assert.deepEqual(clusterEnv(ctx), {
      RECSYS_KAFKA_BROKERS: '127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094',
      RECSYS_REDIS_URL:
        'redis-cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003,127.0.0.1:7004,127.0.0.1:7005',
      RECSYS_KAFKA_REPLICATION_FACTOR: '3',
      RECSYS_KAFKA_MIN_INSYNC_REPLICAS: '2',
    });
    // The replication settings it prints are valid together.
    const vars = clusterEnv(ctx);
    const product = loadConfig({
      RECSYS_ENV: 'development',
      RECSYS_KAFKA_BROKERS: vars.RECSYS_KAFKA_BROKERS,
      RECSYS_KAFKA_REPLICATION_FACTOR: vars.RECSYS_KAFKA_REPLICATION_FACTOR,
      RECSYS_KAFKA_MIN_INSYNC_REPLICAS: vars.RECSYS_KAFKA_MIN_INSYNC_REPLICAS,
    });
    assert.equal(product.kafka.brokers.length, 3);
  });
});
