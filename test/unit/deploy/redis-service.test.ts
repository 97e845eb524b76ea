/**
 * deploy/local's single-node `redis` service and the secure backbone's login with a Redis Cluster
 * URL (`redis-cluster://h1:p1,h2:p2`, which `new URL` refuses): the probe PINGs every seed, a lone
 * node is not started in the cluster's place, and the login reaches every seed. The seeds here are
 * small TCP servers that speak just enough RESP.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { loadConfig } from '../../../core/config.js';
import { createLogger } from '../../../core/log.js';
import { parseRedisUrl } from '../../../core/redis-url.js';
import { redisUrlWith, withCredentials } from '../../../deploy/local/secure.js';
import { BACKBONE, redisPingTargets } from '../../../deploy/local/services.js';
import type { StackContext } from '../../../deploy/local/service-def.js';

/** A server that answers every PING with +PONG and records what it was sent. */
async function fakeRedis(received: string[]): Promise<{ server: Server; port: number }> {
  const server = createServer((socket) => {
    socket.on('data', (d) => {
      received.push(d.toString());
      if (d.toString().includes('PING')) socket.write('+OK\r\n+PONG\r\n');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

function ctxFor(url: string): StackContext {
  return {
    config: loadConfig({ RECSYS_ENV: 'development', RECSYS_REDIS_URL: url }),
    root: '/nonexistent',
    localDir: '/nonexistent/.local',
    cacheDir: '/nonexistent/.cache',
    log: createLogger('silent', 'test'),
  };
}

describe('the redis service with a Redis Cluster URL', () => {
  const received: string[][] = [[], []];
  const seeds: { server: Server; port: number }[] = [];
  let closedPort = 0;

  before(async () => {
    for (const r of received) seeds.push(await fakeRedis(r));
    // A port that was free a moment ago and now refuses connections.
    const gone = await fakeRedis([]);
    closedPort = gone.port;
    await new Promise((resolve) => gone.server.close(resolve));
  });
  after(() => seeds.forEach((s) => s.server.close()));

  it('lists every seed with the login, and the one node of a redis:// URL', () => {
    const cluster = parseRedisUrl('redis-cluster://app:p%40ss@10.0.0.1:7000,10.0.0.2:7001');
    assert.deepEqual(redisPingTargets(cluster), [
      { host: '10.0.0.1', port: 7000, username: 'app', password: 'p@ss' },
      { host: '10.0.0.2', port: 7001, username: 'app', password: 'p@ss' },
    ]);
    assert.deepEqual(redisPingTargets(parseRedisUrl('redis://u:pw@127.0.0.1:6390/4')), [
      { host: '127.0.0.1', port: 6390, username: 'u', password: 'pw' },
    ]);
    assert.equal(redisPingTargets(parseRedisUrl('redis://127.0.0.1'))[0]?.port, 6379);
  });

  it('is ready when every seed answers PONG, not when one does not', async () => {
    const [a, b] = seeds.map((s) => s.port);
    const both = ctxFor(`redis-cluster://user:secret@127.0.0.1:${a},127.0.0.1:${b}`);
    assert.equal(BACKBONE.redis.port(both), a);
    assert.equal(await BACKBONE.redis.probe(both), true);
    // Each seed got AUTH with the cluster's login before its PING.
    for (const r of received) assert.match(r.join(''), /AUTH\r\n\$4\r\nuser\r\n\$6\r\nsecret\r\n/);
    const oneDown = ctxFor(`redis-cluster://127.0.0.1:${a},127.0.0.1:${closedPort}`);
    assert.equal(await BACKBONE.redis.probe(oneDown), false);
  });

  it('refuses to start a lone node in the cluster’s place, saying what to run', async () => {
    const ctx = ctxFor(`redis-cluster://127.0.0.1:${closedPort}`);
    await assert.rejects(BACKBONE.redis.prepare(ctx), /names a Redis Cluster.*--profile cluster/);
  });

  it('gives a cluster URL the secure backbone’s login for every seed', () => {
    const url = redisUrlWith('redis-cluster://old:x@10.0.0.1:7000,10.0.0.2:7001', 'recsys', 'p/w@');
    assert.equal(url, 'redis-cluster://recsys:p%2Fw%40@10.0.0.1:7000,10.0.0.2:7001');
    const base = loadConfig({
      RECSYS_ENV: 'development',
      RECSYS_REDIS_URL: 'redis-cluster://10.0.0.1:7000,10.0.0.2:7001',
    });
    const creds = {
      kafka: { password: 'k', adminPassword: 'ka' },
      redis: { password: 'redis-pw', adminPassword: 'ra' },
    };
    const cluster = withCredentials(base, creds).redis.cluster;
    assert.equal(cluster?.username, 'recsys');
    assert.equal(cluster?.password, 'redis-pw');
    assert.equal(cluster?.nodes.length, 2);
    // The single-node form is unchanged.
    assert.equal(
      redisUrlWith('redis://127.0.0.1:6379/4', 'recsys', 'pw'),
      'redis://recsys:pw@127.0.0.1:6379/4',
    );
  });
});
