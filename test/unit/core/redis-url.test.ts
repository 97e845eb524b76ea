// RECSYS_REDIS_URL in both forms (core/redis-url.ts) and what loadConfig makes of them.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../../core/config.js';
import { ConfigError } from '../../../core/errors.js';
import { parseRedisUrl, redact, RedisUrlError } from '../../../core/redis-url.js';
import { TRENDING, trendShard } from '../../../store/keys.js';
import { createRedis, isCluster } from '../../../store/redis.js';

describe('RECSYS_REDIS_URL', () => {
  it('keeps one node the default, unchanged', () => {
    const { redis, trending } = loadConfig({ RECSYS_ENV: 'development' });
    assert.deepEqual(redis, { url: 'redis://127.0.0.1:6379', cluster: null });
    assert.equal(trending.shards, 1);
    assert.deepEqual(parseRedisUrl('rediss://u:p@h:6380/2/'), {
      url: 'rediss://u:p@h:6380/2',
      cluster: null,
    });
  });

  it('reads a cluster: seed nodes, an ACL user and password (URL-decoded), TLS', () => {
    assert.deepEqual(
      parseRedisUrl('redis-cluster://app:p%40ss%3Aw@10.0.0.1:7000, 10.0.0.2:7001,[::1]:7002'),
      {
        url: 'redis-cluster://app:p%40ss%3Aw@10.0.0.1:7000, 10.0.0.2:7001,[::1]:7002',
        cluster: {
          nodes: [
            { host: '10.0.0.1', port: 7000 },
            { host: '10.0.0.2', port: 7001 },
            { host: '::1', port: 7002 },
          ],
          username: 'app',
          password: 'p@ss:w',
          tls: false,
        },
      },
    );
    assert.deepEqual(parseRedisUrl('rediss-cluster://:secret@h:1/0').cluster, {
      nodes: [{ host: 'h', port: 1 }],
      username: '',
      password: 'secret',
      tls: true,
    });
    assert.deepEqual(parseRedisUrl('redis-cluster://h:7000/').cluster?.nodes, [
      { host: 'h', port: 7000 },
    ]);
    const config = loadConfig({
      RECSYS_ENV: 'development',
      RECSYS_REDIS_URL: 'redis-cluster://h1:7000,h2:7000',
    });
    assert.equal(config.redis.cluster?.nodes.length, 2);
    assert.equal(config.trending.shards, 16, 'spread over 16 slots on a cluster by default');
    const four = loadConfig({
      RECSYS_ENV: 'development',
      RECSYS_REDIS_URL: 'redis-cluster://h1:7000',
      RECSYS_TRENDING_SHARDS: '4',
    });
    assert.equal(four.trending.shards, 4);
  });

  it('refuses a database number with a cluster, naming the variable and hiding the password', () => {
    assert.throws(
      () =>
        loadConfig({
          RECSYS_ENV: 'development',
          RECSYS_REDIS_URL: 'redis-cluster://app:topsecret@h1:7000,h2:7000/3',
        }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.variable === 'RECSYS_REDIS_URL' &&
        /only database 0/.test(err.message) &&
        !err.message.includes('topsecret'),
    );
    for (const bad of [
      'redis-cluster://',
      'redis-cluster://h1',
      'redis-cluster://h1:0',
      'redis-cluster://h1:70000',
      'redis-cluster://h1:7000,h2',
      'http://h:1',
      'nonsense',
    ]) {
      assert.throws(() => parseRedisUrl(bad), RedisUrlError, bad);
    }
    assert.equal(redact('redis-cluster://app:pw@h:1,h:2'), 'redis-cluster://app:***@h:1,h:2');
  });

  it('creates a Cluster client for the cluster form and a Redis client for one node', () => {
    const c = createRedis('redis-cluster://127.0.0.1:1', 'unit');
    const r = createRedis('redis://127.0.0.1:1', 'unit');
    for (const client of [c, r]) client.on('error', () => undefined);
    try {
      assert.equal(isCluster(c), true);
      assert.equal(isCluster(r), false);
    } finally {
      c.disconnect();
      r.disconnect();
    }
  });

  it('shards trending keys by item, one hash tag per shard, the same in every process', () => {
    assert.equal(TRENDING.window(3600, null), '{trend}:w3600', 'one shard: the names as before');
    assert.equal(TRENDING.meta(TRENDING.tag(3, 16)), '{trend:3}:meta');
    assert.equal(TRENDING.window(60, 'c', '{trend:3}'), '{trend:3}:w60:c:c');
    assert.equal(trendShard('anything', 1), 0);
    const counts = new Array<number>(16).fill(0);
    for (let i = 0; i < 16_000; i++) counts[trendShard(`item-${i}`, 16)]! += 1;
    // FNV-1a spreads ids: every shard within 20% of its share.
    assert.ok(
      counts.every((n) => n > 800 && n < 1200),
      counts.join(','),
    );
    assert.equal(trendShard('item-42', 16), trendShard('item-42', 16));
  });
});
