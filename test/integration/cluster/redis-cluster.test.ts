/**
 * The stores on a real Redis Cluster (3 masters, 3 replicas, an ACL user, started here on spare
 * ports): RECSYS_REDIS_URL in its cluster form makes `createRedis` return an ioredis Cluster, and
 * every script and transaction the stream roles, serving and the batch run keeps to one slot
 * (CROSSSLOT would fail them). redis-cli -c proves from outside where keys landed and that the
 * sharded change signal is plain SPUBLISH/SSUBSCRIBE.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig } from '../../../core/config.js';
import { classifyError } from '../../../core/errors.js';
import { watchUserChanges } from '../../../store/changes.js';
import { CandidateStore } from '../../../store/candidates.js';
import { CatalogStore } from '../../../store/catalog.js';
import { ImpressionStore } from '../../../store/impressions.js';
import { ServedFeedStore } from '../../../store/attribution.js';
import {
  BATCH,
  TRENDING,
  trendShard,
  userChangeChannel,
  userEventIdsKey,
  userFeaturesKey,
} from '../../../store/keys.js';
import { OnlineNeighbourStore } from '../../../store/online-neighbours.js';
import { Registry } from 'prom-client';
import {
  createRedis,
  isCluster,
  type RedisClient,
  redisHealth,
  redisMemoryMetrics,
} from '../../../store/redis.js';
import {
  APPLIED,
  DUPLICATE,
  type FeatureEvent,
  readFeatures,
  REDELIVERED,
  SessionFeatureStore,
} from '../../../store/session-features.js';
import { SocketLeaseStore } from '../../../store/socket-leases.js';
import { TrendingStore, type TrendingRecord } from '../../../store/trending.js';
import { CI, run } from '../harness.js';
import { type RedisClusterProcesses, startRedisCluster } from './redis-cluster.js';

const hasRedisServer = (await run('redis-server', ['--version']).catch(() => null))?.code === 0;

describe('Redis Cluster', { timeout: 180_000 }, () => {
  let cluster: RedisClusterProcesses | null = null;
  let redis: RedisClient;
  const clients: RedisClient[] = [];
  const connect = (opts: { shardedSubscriber?: boolean } = {}): RedisClient => {
    const c = createRedis((cluster as RedisClusterProcesses).url, 'test-cluster', opts);
    c.on('error', () => undefined);
    clients.push(c);
    return c;
  };
  const cli = (args: string[], opts?: { port?: number; follow?: boolean }) =>
    (cluster as RedisClusterProcesses).cli(args, opts);
  const config = loadConfig({ RECSYS_ENV: 'development' });

  before(async () => {
    if (!hasRedisServer) {
      if (CI) throw new Error('redis-server is not installed');
      return;
    }
    cluster = await startRedisCluster();
    redis = connect();
  });

  after(async () => {
    for (const c of clients) c.disconnect();
    await cluster?.stop();
  });

  it('takes the cluster URL: a Cluster client logged in as the URL user; no login, no access', async (t) => {
    if (!cluster) return t.skip('redis-server not installed');
    assert.ok(isCluster(redis));
    t.diagnostic(`6 nodes on ${cluster.ports.join(',')} formed a cluster in ${cluster.startMs} ms`);
    const parsed = loadConfig({ RECSYS_ENV: 'development', RECSYS_REDIS_URL: cluster.url });
    assert.equal(parsed.redis.cluster?.nodes.length, 2);
    assert.equal(parsed.trending.shards, 16, 'trending spreads over 16 slots on a cluster');
    assert.equal(await redis.ping(), 'PONG');
    const anonymous = await run('redis-cli', ['-c', '-p', String(cluster.ports[0]), 'PING']);
    assert.match(anonymous.stdout + anonymous.stderr, /NOAUTH|Authentication required/);
    const wrong = createRedis(cluster.url.replace(`:${cluster.password}@`, ':wrong@'), 't');
    wrong.on('error', () => undefined);
    clients.push(wrong);
    await assert.rejects(() => wrong.ping());
    // Health and memory of the whole cluster: the masters' used_memory summed.
    await redisHealth(redis, 1000);
    const registry = new Registry();
    redisMemoryMetrics(redis, registry);
    const text = await registry.getSingleMetricAsString('recsys_redis_used_memory_bytes');
    const used = Number(/recsys_redis_used_memory_bytes (\d+)/.exec(text)?.[1]);
    const one = Number(
      /used_memory:(\d+)/.exec((await cli(['INFO', 'memory'], { follow: false })).stdout)?.[1],
    );
    assert.ok(used > 2 * one && used < 4 * one, `3 masters' memory ${used}, one node's ${one}`);
  });

  it('applies features and the eventId window in the user slot, on the master of that slot', async (t) => {
    if (!cluster) return t.skip('redis-server not installed');
    const store = new SessionFeatureStore(redis, config.features);
    const users = Array.from({ length: 40 }, (_, i) => `cu${i}-${randomUUID().slice(0, 8)}`);
    const now = Date.now();
    const events: FeatureEvent[] = users.flatMap((userId, u) =>
      Array.from({ length: 3 }, (_, k) => ({
        userId,
        eventId: randomUUID(),
        itemId: `i${(u + k) % 7}`,
        type: k === 2 ? ('purchase' as const) : ('view' as const),
        ts: now - 1000 + k,
        sessionId: null,
        category: 'shoes',
        partition: u % 3,
        offset: String(100 + u * 3 + k),
      })),
    );
    const statuses = await store.apply(events);
    assert.ok(statuses.every((s) => s === APPLIED));
    // Redelivered (same records) and re-sent (same eventIds, new offsets): nothing changes.
    assert.ok((await store.apply(events)).every((s) => s === REDELIVERED));
    const resent = events.map((e) => ({ ...e, offset: String(Number(e.offset) + 10_000) }));
    assert.ok((await store.apply(resent)).every((s) => s === DUPLICATE));

    const masters = new Set<number>();
    for (const userId of users.slice(0, 10)) {
      const f = await readFeatures(redis, userId, now, config.features.halfLifeMs);
      assert.equal(f?.total, 3);
      assert.equal(f?.counts.purchase, 1);
      const key = userFeaturesKey(userId);
      const slot = (await cli(['CLUSTER', 'KEYSLOT', key])).stdout.trim();
      assert.equal(
        (await cli(['CLUSTER', 'KEYSLOT', userEventIdsKey(userId)])).stdout.trim(),
        slot,
      );
      const port = await cluster.masterOf(key);
      masters.add(port);
      // On the slot's master without -c: answered there (no MOVED), so the key is on that node.
      const direct = await cli(['HGET', key, 'n'], { port, follow: false });
      assert.equal(direct.stdout.trim(), '3', `${key} (slot ${slot}) on ${port}`);
      assert.equal(
        (await cli(['EXISTS', userEventIdsKey(userId)], { port, follow: false })).stdout.trim(),
        '1',
      );
    }
    assert.ok(masters.size >= 2, `users spread over ${masters.size} masters`);
    t.diagnostic(
      `40 users x 3 events applied, redelivered, re-sent; users on ${masters.size} masters`,
    );
  });

  it('sends the change signal by sharded pub/sub to each server watching the user', async (t) => {
    if (!cluster) return t.skip('redis-server not installed');
    const serverA = connect({ shardedSubscriber: true });
    const serverB = connect({ shardedSubscriber: true });
    const heardA: string[] = [];
    const heardB: string[] = [];
    const watchA = watchUserChanges(serverA, (u) => heardA.push(u));
    const watchB = watchUserChanges(serverB, (u) => heardB.push(u));
    const users = Array.from({ length: 6 }, (_, i) => `cs${i}-${randomUUID().slice(0, 8)}`);
    const [a1, a2, b1, b2, both, none] = users as [string, string, string, string, string, string];
    await Promise.all([watchA.add(a1), watchA.add(a2), watchA.add(both)]);
    await Promise.all([watchB.add(b1), watchB.add(b2), watchB.add(both)]);
    const store = new SessionFeatureStore(redis, config.features);
    const t0 = Date.now();
    await store.apply(
      users.map((userId, i) => ({
        userId,
        eventId: randomUUID(),
        itemId: 'i1',
        type: 'view',
        ts: t0,
        sessionId: null,
        category: null,
        partition: 0,
        offset: String(i),
      })),
    );
    for (let i = 0; i < 100 && heardA.length + heardB.length < 6; i++) await sleep(20);
    assert.deepEqual(heardA.sort(), [a1, a2, both].sort());
    assert.deepEqual(heardB.sort(), [b1, b2, both].sort());
    assert.ok(!heardA.includes(none) && !heardB.includes(none));
    t.diagnostic(`6 signals heard within ${Date.now() - t0} ms`);

    // From outside: redis-cli SPUBLISH on the user's channel reaches server A; one receiver.
    const published = await cli(['SPUBLISH', userChangeChannel(a1), a1]);
    assert.equal(published.stdout.trim(), '1', 'one subscriber (server A) on that shard channel');
    for (let i = 0; i < 100 && heardA.length < 4; i++) await sleep(20);
    assert.equal(heardA.filter((u) => u === a1).length, 2);

    // And the script's SPUBLISH is what redis-cli SSUBSCRIBE hears on the slot's master.
    const port = await cluster.masterOf(userChangeChannel(b1));
    const sub = spawn('redis-cli', [
      '-p',
      String(port),
      '--user',
      cluster.user,
      '--pass',
      cluster.password,
      '--no-auth-warning',
      'SSUBSCRIBE',
      userChangeChannel(b1),
    ]);
    let out = '';
    sub.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      for (let i = 0; i < 100 && !out.includes('ssubscribe'); i++) await sleep(20);
      await store.apply([
        {
          userId: b1,
          eventId: randomUUID(),
          itemId: 'i2',
          type: 'click',
          ts: t0 + 1,
          sessionId: null,
          category: null,
          partition: 0,
          offset: '99',
        },
      ]);
      for (let i = 0; i < 100 && !out.includes('smessage'); i++) await sleep(20);
      assert.match(
        out,
        new RegExp(`smessage\\n${userChangeChannel(b1).replace(/[{}]/g, '\\$&')}\\n${b1}`),
      );
    } finally {
      sub.kill();
    }
    await watchA.remove(a1);
    await cli(['SPUBLISH', userChangeChannel(a1), a1]);
    await sleep(100);
    assert.equal(heardA.filter((u) => u === a1).length, 2, 'no signal after remove');
    await Promise.all([watchA.stop(), watchB.stop()]);
  });

  it('shards trending by item over several slots and reads the same ranking as one slot', async (t) => {
    if (!cluster) return t.skip('redis-server not installed');
    const windows = { windowsSec: [3600, 7200], buckets: 6 };
    const sharded = new TrendingStore(redis, { ...windows, shards: 16 });
    const single = new TrendingStore(redis, { ...windows, shards: 1 });
    const now = Date.now();
    // Counts with many ties (to check the order of equal counts) over 3 partitions.
    let seed = 7;
    const rand = (n: number): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
    const byPartition: TrendingRecord[][] = [[], [], []];
    for (let i = 0; i < 3000; i++) {
      const item = `it${rand(120)}`;
      byPartition[i % 3]?.push({
        itemId: item,
        category: rand(4) === 0 ? null : `c${Number(item.slice(2)) % 5}`,
        ts: now - rand(7_000_000),
        offset: String(i),
      });
    }
    for (const [p, records] of byPartition.entries()) {
      for (let i = 0; i < records.length; i += 250) {
        const chunk = records.slice(i, i + 250);
        await Promise.all([
          sharded.apply('events', p, chunk, now),
          single.apply('events', p, chunk, now),
        ]);
      }
      // A redelivered chunk counts nothing in either.
      await sharded.apply('events', p, records.slice(0, 250), now);
      await single.apply('events', p, records.slice(0, 250), now);
    }
    for (const store of [sharded, single]) await store.advance(now);
    let compared = 0;
    for (const sec of windows.windowsSec) {
      for (const category of [null, 'c0', 'c1', 'c3']) {
        for (const k of [1, 10, 50, 200]) {
          const a = await sharded.top(sec, category, k);
          const b = await single.top(sec, category, k);
          assert.deepEqual(a, b, `window ${sec} category ${category} k ${k}`);
          assert.ok(b.length > 0);
          compared++;
        }
      }
    }
    // Keys of different shards sit on different masters; a shard's keys share its slot.
    const masters = new Set<number>();
    for (let s = 0; s < 16; s++)
      masters.add(await cluster.masterOf(TRENDING.meta(TRENDING.tag(s, 16))));
    assert.equal(masters.size, 3, 'the 16 trending shards span all 3 masters');
    const [item, expected] = (await single.top(3600, null, 1))[0] as [string, number];
    const tag = TRENDING.tag(trendShard(item, 16), 16);
    const port = await cluster.masterOf(TRENDING.meta(tag));
    const score = await cli(['ZSCORE', TRENDING.window(3600, null, tag), item], {
      port,
      follow: false,
    });
    assert.equal(Number(score.stdout.trim()), expected);
    t.diagnostic(`${compared} top-k reads equal between 16 shards and one slot`);
  });

  it('runs the socket lease, impression, attribution, neighbour and catalog scripts', async (t) => {
    if (!cluster) return t.skip('redis-server not installed');
    const leases = new SocketLeaseStore(redis, { leaseMs: 10_000 });
    const u = `cl-${randomUUID().slice(0, 8)}`;
    assert.equal(await leases.acquire(u, 's1', 2), true);
    assert.equal(await leases.acquire(u, 's2', 2), true);
    assert.equal(await leases.acquire(u, 's3', 2), false, 'the cap holds');
    await leases.renew(
      new Map([
        [u, ['s1', 's2']],
        [`${u}x`, ['s9']],
      ]),
    );
    await leases.release(u, 's1');
    assert.equal(await leases.acquire(u, 's3', 2), true);

    const impressions = new ImpressionStore(redis);
    await impressions.record([
      { userId: u, itemIds: ['a', 'b'], partition: 0, offset: '1' },
      { userId: `${u}y`, itemIds: ['a'], partition: 0, offset: '2' },
      { userId: u, itemIds: ['a'], partition: 0, offset: '3' },
    ]);
    assert.deepEqual([...(await impressions.read(u))].sort(), [
      ['a', 2],
      ['b', 1],
    ]);

    const served = new ServedFeedStore(redis);
    await served.record([
      { userId: u, requestId: 'r1', ts: Date.now(), modelVersion: 'm1', itemIds: ['a', 'b'] },
    ]);
    assert.equal((await served.read([u, `${u}y`])).get(u)?.length, 1);

    await new OnlineNeighbourStore(redis).record([
      { itemId: 'x1', previous: ['x2', 'x3'], ts: Date.now() },
      { itemId: 'x4', previous: ['x1'], ts: Date.now() },
    ]);

    const catalog = new CatalogStore(redis, { cacheTtlMs: 0, cacheSize: 0 });
    const items = Array.from({ length: 30 }, (_, i) => ({
      itemId: `ci${i}`,
      categoryL1: 'shoes',
      categoryL2: 'run',
      price: 10 + i,
      isAvailable: true,
      createdAt: 1,
    }));
    await catalog.upsert(items);
    assert.equal((await catalog.get(items.map((i) => i.itemId))).size, 30);
    await catalog.remove(items.slice(0, 20).map((i) => i.itemId));
    assert.equal((await catalog.get(items.map((i) => i.itemId))).size, 10);
  });

  it('publishes batch versions: the pointer switch in one slot, a reader never mixes versions', async (t) => {
    if (!cluster) return t.skip('redis-server not installed');
    const store = new CandidateStore(redis);
    const users = Array.from({ length: 60 }, (_, i) => `cb${i}`);
    const write = async (tag: string): Promise<number> => {
      const v = await store.beginVersion();
      const w = store.writer(v, 25);
      for (const u of users) await w.put('users', u, `${tag}-${u},1 ${tag}-x,0.5`);
      await w.put('popular', '', `${tag}-p,3`);
      await w.put('neighbours', 'n1', `${tag}-n,2`);
      await w.flush();
      return v;
    };
    const v1 = await write('one');
    assert.deepEqual(
      await store.publish(v1, { users: 60 }, { keepVersions: 1, retireGraceSec: 0 }),
      {
        previous: null,
        retired: [],
      },
    );
    assert.equal(await store.currentVersion(), v1);
    // A reader takes the version once, then reads every list of it.
    const reader = await store.currentVersion();
    const v2 = await write('two');
    // The switch happens between the reader's pointer read and its list reads.
    const { retired } = await store.publish(
      v2,
      { users: 60 },
      { keepVersions: 2, retireGraceSec: 300 },
    );
    assert.deepEqual(retired, []);
    const lists = await Promise.all(users.map((u) => store.readCandidates(u, reader as number)));
    assert.ok(
      lists.every((l, i) => l.items.map((x) => x.itemId).join() === `one-${users[i]},one-x`),
    );
    const now = await Promise.all(users.map((u) => store.readCandidates(u)));
    assert.ok(
      now.every((l) => l.version === v2 && l.items.every((x) => x.itemId.startsWith('two-'))),
    );
    assert.equal((await store.readPopular(null, 5))[0]?.itemId, 'two-p');
    // The pointer and the version set share the {batch} slot: redis-cli reads them there.
    assert.equal((await cli(['GET', BATCH.current])).stdout.trim(), String(v2));
    assert.equal(
      (await cli(['CLUSTER', 'KEYSLOT', BATCH.current])).stdout.trim(),
      (await cli(['CLUSTER', 'KEYSLOT', BATCH.versions])).stdout.trim(),
    );
    // Retiring scans every master: v1's keys (on all three) are gone with a grace of 0.
    const v3 = await write('three');
    const out = await store.publish(v3, { users: 60 }, { keepVersions: 1, retireGraceSec: 0 });
    assert.deepEqual(out.retired, [v1, v2]);
    let left = 0;
    for (const port of cluster.ports.slice(0, 3)) {
      const keys = await cli(['--scan', '--pattern', `*v${v1}*`], { port, follow: false });
      left += keys.stdout.split('\n').filter((k) => BATCH.versionOf(k) === v1).length;
    }
    assert.equal(left, 0, 'no key of v1 left on any master');
    // Rollback is a transaction over the same slot.
    await assert.rejects(() => store.rollback(console as never), /no version older/);
  });

  it('keeps applying features and signalling a watched user after its master is killed', async (t) => {
    if (!cluster) return t.skip('redis-server not installed');
    const userId = `cf-${randomUUID().slice(0, 8)}`;
    const server = connect({ shardedSubscriber: true });
    const heard: string[] = [];
    const gaps: string[][] = [];
    const watch = watchUserChanges(
      server,
      (u) => heard.push(u),
      (users) => gaps.push(users),
    );
    await watch.add(userId);
    const store = new SessionFeatureStore(redis, config.features);
    let offset = 0;
    const nextEvent = (): FeatureEvent => ({
      userId,
      eventId: randomUUID(),
      itemId: 'i1',
      type: 'view',
      ts: Date.now(),
      sessionId: null,
      category: null,
      partition: 0,
      offset: String(offset++),
    });
    await store.apply([nextEvent()]);
    for (let i = 0; i < 100 && heard.length < 1; i++) await sleep(20);
    assert.equal(heard.length, 1);
    const master = await cluster.masterOf(userFeaturesKey(userId));
    const t0 = Date.now();
    await cluster.kill(master);
    // An event at once, retried as the consumer retries (by class) until the replica took over:
    // every failure meanwhile must be retriable (a permanent one would dead-letter the event).
    const event = nextEvent();
    const classes = new Map<string, number>();
    for (;;) {
      try {
        await store.apply([event]);
        break;
      } catch (err) {
        const c = `${classifyError(err)}: ${(err as Error).message.slice(0, 60)}`;
        classes.set(c, (classes.get(c) ?? 0) + 1);
        assert.ok(Date.now() - t0 < 60_000, `no failover in 60 s: ${[...classes.keys()]}`);
        await sleep(100);
      }
    }
    const appliedMs = Date.now() - t0;
    assert.ok(
      [...classes.keys()].every((c) => c.startsWith('retriable')),
      [...classes.keys()].join('; '),
    );
    const promoted = await cluster.masterOf(userFeaturesKey(userId));
    assert.notEqual(promoted, master, 'a replica took over the slot');
    const f = await readFeatures(redis, userId, Date.now(), config.features.halfLifeMs);
    assert.equal(f?.total, 2, 'both events applied, none lost with the master');
    // The signal of that event arrives, or the watcher is told it may have missed some (after
    // ioredis re-subscribed on the new master), and serving pushes every watched feed again.
    const count = (): number => heard.length;
    for (let i = 0; i < 500 && (count() < 2 || gaps.length < 1); i++) await sleep(20);
    const gapped = gaps.some((users) => users.includes(userId));
    assert.ok(count() === 2 || gapped, `heard ${count()}, gaps ${gaps.length}`);
    assert.ok(gapped, 'the watcher was told of the gap (serving then pushes every feed again)');
    // And the next change is heard from the new master.
    const before = count();
    await store.apply([nextEvent()]);
    for (let i = 0; i < 250 && count() === before; i++) await sleep(20);
    assert.equal(count(), before + 1, 'a change after the failover is heard');
    t.diagnostic(
      `master ${master} killed; an event retried from then on applied after ${appliedMs} ms ` +
        `(replica ${promoted}); signals heard ${heard.length} of 3, re-subscriptions ${gaps.length}; failures meanwhile: ${[...classes].map(([c, n]) => `${n}x ${c}`).join('; ') || 'none'}`,
    );
    await watch.stop();
  });
});
