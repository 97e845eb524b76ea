/**
 * The project's Redis connection against redis-cli: what ioredis writes under a user's hash-tagged
 * key, redis-cli reads (fields, values, TTL), and the other way round.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRedis, redisHealth, type Redis } from '../../../store/redis.js';
import { config, requireServices, run, uniq } from '../harness.js';

/** redis-cli against the configured server; fails the test on a non-zero exit. */
async function cli(...args: string[]): Promise<string> {
  const res = await run('redis-cli', ['-u', config.redis.url, '--no-raw', ...args], {
    timeoutMs: 10_000,
  });
  assert.equal(res.code, 0, `redis-cli ${args.join(' ')}: ${res.stderr}`);
  return res.stdout;
}

/** redis-cli's raw output: one reply (or array element) per line. */
async function cliRaw(...args: string[]): Promise<string[]> {
  const res = await run('redis-cli', ['-u', config.redis.url, '--raw', ...args], {
    timeoutMs: 10_000,
  });
  assert.equal(res.code, 0, `redis-cli ${args.join(' ')}: ${res.stderr}`);
  assert.ok(!res.stdout.startsWith('ERR') && !res.stdout.startsWith('WRONGTYPE'), res.stdout);
  return res.stdout.replace(/\n$/, '').split('\n');
}

describe('redis', () => {
  test(
    'ioredis writes a hash-tagged hash and TTL string that redis-cli reads',
    { timeout: 30_000 },
    async (t) => {
      if (!(await requireServices(t, 'redis'))) return;
      const redis = createRedis(config.redis.url, 'test');
      const userId = uniq('u');
      const features = `test:{u:${userId}}:features`;
      const last = `test:{u:${userId}}:last-item`;
      try {
        await redis.hset(features, { views: '3', clicks: '1', lastCategory: 'shoes & bags' });
        await redis.set(last, 'item-42', 'EX', 120);

        const flat = await cliRaw('HGETALL', features);
        const pairs: Record<string, string> = {};
        for (let i = 0; i + 1 < flat.length; i += 2)
          pairs[flat[i] as string] = flat[i + 1] as string;
        assert.deepEqual(pairs, { views: '3', clicks: '1', lastCategory: 'shoes & bags' });

        assert.deepEqual(await cliRaw('GET', last), ['item-42']);
        const ttl = Number((await cliRaw('TTL', last))[0]);
        assert.ok(ttl > 100 && ttl <= 120, `TTL ${ttl} not in (100, 120]`);
        // The hash has no expiry: -1 (a missing key would be -2).
        assert.deepEqual(await cliRaw('TTL', features), ['-1']);
      } finally {
        await redis.del(features, last);
        await redis.quit();
      }
    },
  );

  test('redis-cli writes what ioredis reads, TTL included', { timeout: 30_000 }, async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const redis = createRedis(config.redis.url, 'test');
    const key = `test:{u:${uniq('u')}}:session`;
    try {
      assert.equal((await cli('SET', key, 'sess-7 é', 'EX', '90')).trim(), 'OK');
      assert.equal(await redis.get(key), 'sess-7 é');
      const ttl = await redis.ttl(key);
      assert.ok(ttl > 70 && ttl <= 90, `TTL ${ttl} not in (70, 90]`);

      assert.equal((await cli('HSET', key + ':h', 'a', '1', 'b', '2')).trim(), '(integer) 2');
      assert.deepEqual(await redis.hgetall(key + ':h'), { a: '1', b: '2' });
    } finally {
      await redis.del(key, key + ':h');
      await redis.quit();
    }
  });

  test('redisHealth passes against the running server', { timeout: 30_000 }, async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const redis = createRedis(config.redis.url, 'test');
    try {
      const ready = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('not ready within 5 s')), 5000);
        redis.once('ready', () => {
          clearTimeout(timer);
          resolve();
        });
      });
      // A fresh connection is not ready yet, and the check must say so rather than pass.
      assert.notEqual(redis.status, 'ready');
      await assert.rejects(redisHealth(redis, 500), /redis: connection is/);
      await ready;
      await redisHealth(redis, 500);
      // The client named itself, so the server lists this very connection under that name.
      const id = await redis.client('ID');
      assert.match(
        await cli('CLIENT', 'LIST', 'ID', String(id)),
        new RegExp(`^id=${id} .* name=test `),
      );
    } finally {
      await redis.quit();
    }
  });

  test(
    'coalesced writes: the commands of one turn leave in one write, the replies in order, and survive a reconnect',
    { timeout: 30_000 },
    async (t) => {
      if (!(await requireServices(t, 'redis'))) return;
      const key = `test:{u:${uniq('u')}}:coalesce`;
      /** Writes reaching the socket of `redis`'s current connection. */
      const countWrites = (redis: Redis): { writes: number } => {
        const count = { writes: 0 };
        const stream = redis.stream as unknown as {
          _write: (...args: unknown[]) => void;
          _writev?: (...args: unknown[]) => void;
        };
        const write = stream._write.bind(stream);
        const writev = stream._writev?.bind(stream);
        stream._write = (...args) => {
          count.writes++;
          write(...args);
        };
        if (writev)
          stream._writev = (...args) => {
            count.writes++;
            writev(...args);
          };
        return count;
      };
      const turn = (redis: Redis) =>
        Promise.all([
          redis.set(key, '1'),
          redis.incr(key),
          redis.get(key),
          redis.hset(key + ':h', 'a', 'x'),
          redis.hgetall(key + ':h'),
        ]);
      // One node: coalescing is a single connection's socket (a cluster auto-pipelines instead).
      const coalesced = createRedis(config.redis.url, 'test', { coalesceWrites: true }) as Redis;
      const plain = createRedis(config.redis.url, 'test') as Redis;
      try {
        await Promise.all([coalesced.ping(), plain.ping()]);
        const one = countWrites(coalesced);
        assert.deepEqual(await turn(coalesced), ['OK', 2, '2', 1, { a: 'x' }]);
        assert.equal(one.writes, 1, 'five commands issued in one turn, one write');
        assert.equal(await coalesced.get(key), '2');
        assert.equal(one.writes, 2, 'the next turn writes again (the socket was uncorked)');
        // The same commands without coalescing: one write each (what the count would miss).
        const five = countWrites(plain);
        await turn(plain);
        assert.equal(five.writes, 5);

        // The connection drops while its socket is corked: ioredis reconnects and sends the
        // commands again; the new socket is not left corked.
        const pending = turn(coalesced);
        coalesced.stream.destroy();
        assert.deepEqual(await pending, ['OK', 2, '2', 0, { a: 'x' }]);
        assert.equal(coalesced.stream.writableCorked, 0);
        assert.equal(await coalesced.incr(key), 3);
      } finally {
        await plain.del(key, key + ':h');
        await Promise.all([coalesced.quit(), plain.quit()]);
      }
    },
  );
});
