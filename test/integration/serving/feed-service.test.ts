/**
 * The feed service against the real backbone: `runBatch` on generated data (temp lake, batch
 * dir and local registry, Redis database 12) gives batch candidates, neighbours, popularity and
 * a champion model; then feeds are built for users with batch candidates, brand-new users and
 * users whose live features come from `SessionFeatureStore`; exclusions, the diversity rule,
 * impression fatigue, the served log (read back with kcat), the impressions role, latency over
 * 1,000 calls and the model hot swap (and a corrupt model that must not replace it); with its
 * Redis connection cut or answering nothing (a TCP proxy the test controls), feeds fall back to
 * the last popular list (at once, or at the deadline) and are personal again once Redis is back.
 */
import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import avro from 'avsc';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { type Config, loadConfig } from '../../../core/index.js';
import { runBatch } from '../../../batch/run.js';
import { CandidateStore } from '../../../store/candidates.js';
import { openRegistry } from '../../../store/registry/index.js';
import { readSchema, type ServedFeed } from '../../../schemas/index.js';
import { CatalogStore } from '../../../store/catalog.js';
import { SessionFeatureStore, type FeatureEvent } from '../../../store/session-features.js';
import { ImpressionStore } from '../../../store/impressions.js';
import { startImpressions } from '../../../stream/roles/impressions.js';
import { BATCH } from '../../../store/keys.js';
import { TrendingStore } from '../../../store/trending.js';
import {
  FALLBACK_VERSION,
  startFeedService,
  type Feed,
  type FeedService,
} from '../../../serving/feed/service.js';
import { createRedis } from '../../../store/redis.js';
import {
  config as baseConfig,
  kcatKafka,
  log,
  requireServices,
  runBytes,
  uniq,
} from '../harness.js';

const DB = 12;

function parseKcat(buf: Buffer): Array<{ key: string; value: Buffer }> {
  const records: Array<{ key: string; value: Buffer }> = [];
  let pos = 0;
  while (pos < buf.length) {
    const tab1 = buf.indexOf(0x09, pos);
    const tab2 = buf.indexOf(0x09, tab1 + 1);
    const length = Number(buf.subarray(tab1 + 1, tab2).toString());
    const start = tab2 + 1;
    records.push({
      key: buf.subarray(pos, tab1).toString(),
      value: buf.subarray(start, start + length),
    });
    pos = start + length + 1;
  }
  return records;
}

/**
 * A TCP proxy in front of Redis that the test can cut (every connection dropped, new ones
 * refused, as when a node dies), make hold (connections accepted, nothing answered, as a slot
 * without a master) and restore on the same port.
 */
async function redisProxy(host: string, port: number) {
  const sockets = new Set<Socket>();
  let server: Server | null = null;
  let listenPort = 0;
  let holding = false;
  const listen = async (): Promise<void> => {
    const s = createServer((client) => {
      sockets.add(client);
      client.on('close', () => sockets.delete(client));
      if (holding) return void client.on('error', () => undefined);
      const upstream = connect(port, host);
      for (const sock of [client, upstream]) {
        sockets.add(sock);
        sock.on('close', () => sockets.delete(sock));
        sock.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => s.listen(listenPort, '127.0.0.1', resolve));
    listenPort = (s.address() as { port: number }).port;
    server = s;
  };
  await listen();
  return {
    port: listenPort,
    async cut(): Promise<void> {
      const s = server;
      server = null;
      for (const sock of sockets) sock.destroy();
      await new Promise<void>((resolve) => (s ? s.close(() => resolve()) : resolve()));
    },
    async hold(): Promise<void> {
      holding = true;
      for (const sock of sockets) sock.destroy();
    },
    async restore(): Promise<void> {
      holding = false;
      for (const sock of sockets) sock.destroy();
      if (!server) await listen();
    },
  };
}

const percentile = (sorted: number[], p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;

async function until<T>(
  what: string,
  fn: () => Promise<T | null | undefined | false>,
  ms = 20_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('feed service', { timeout: 600_000 }, () => {
  let dir: string;
  let config: Readonly<Config>;
  let redis: Redis;
  let feeds: FeedService | null = null;
  let metrics: Registry;
  let champion: string;
  let skipped = false;
  let version: number;
  let offset = 0;

  const events = (userId: string, list: [string, FeatureEvent['type']][]): FeatureEvent[] =>
    list.map(([itemId, type], i) => ({
      userId,
      eventId: `${userId}-${offset + i}`,
      itemId,
      type,
      ts: Date.now() - (list.length - i) * 1000,
      sessionId: null,
      category: null,
      partition: 0,
      offset: String(offset++ + i),
    }));

  /** Users with batch candidates, most candidates first. */
  const batchUsers = async (): Promise<string[]> => {
    const users: [string, number][] = [];
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(
        cursor,
        'MATCH',
        `{u:*}:cand:v${version}`,
        'COUNT',
        1000,
      );
      cursor = next;
      for (const k of keys) users.push([k.slice(3, k.indexOf('}')), 0]);
    } while (cursor !== '0' && users.length < 200);
    for (const u of users)
      u[1] = (await new CandidateStore(redis).readCandidates(u[0], version)).items.length;
    return users.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map(([u]) => u);
  };

  const checkDiversity = (feed: Feed): void => {
    const counts = new Map<string, number>();
    for (const item of feed.items.slice(0, 10)) {
      if (item.categoryL1 === null) continue;
      counts.set(item.categoryL1, (counts.get(item.categoryL1) ?? 0) + 1);
    }
    for (const [cat, n] of counts) {
      assert.ok(n <= config.serving.maxPerCategory, `${n} items of ${cat} in the top 10`);
    }
  };

  before(async () => {
    // A hook has no skip(): under CI requireServices throws (the suite fails), elsewhere the
    // tests skip themselves.
    const probe = { skip: () => undefined } as unknown as TestContext;
    if (!(await requireServices(probe, 'redis', 'kafka', 'registry'))) {
      skipped = true;
      return;
    }
    dir = await mkdtemp(join(tmpdir(), 'feed-service-'));
    config = loadConfig({
      ...process.env,
      RECSYS_REDIS_URL: `${baseConfig.redis.url}/${DB}`,
      RECSYS_LAKE_DIR: join(dir, 'lake'),
      RECSYS_BATCH_DIR: join(dir, 'batch'),
      RECSYS_MODEL_REGISTRY_URL: `file://${join(dir, 'models')}`,
      MLFLOW_TRACKING_URI: '',
      RECSYS_MODEL_MIN_NDCG: '0',
      RECSYS_MODEL_POLL_MS: '200',
      // Fatigue is off by default; this test checks it where an operator turns it on.
      RECSYS_FEED_FATIGUE_IMPRESSIONS: '3',
      // Short, so the test of an unannounced catalog change sees the TTL re-read.
      RECSYS_SERVING_CATALOG_TTL_MS: '1000',
      RECSYS_TOPIC_SERVED: uniq('test.served'),
    });
    redis = new Redis(config.redis.url, { maxRetriesPerRequest: 2 });
    await redis.flushdb();
    const res = await runBatch(
      config,
      log,
      redis,
      { generateEvents: 60_000, seed: 7 },
      () => undefined,
    );
    assert.equal(res.model.promoted, true, res.model.reason);
    champion = res.model.version;
    version = (await new CandidateStore(redis).currentVersion()) as number;
    // Some trending counts, as the feature consumer would keep them.
    const trending = new TrendingStore(redis, config.trending);
    const catalog = new CatalogStore(redis, { cacheTtlMs: 0, cacheSize: 0 });
    const [, itemKeys] = await redis.scan('0', 'MATCH', 'item:*', 'COUNT', 1000);
    const known = [...(await catalog.get(itemKeys.slice(0, 5).map((k) => k.slice(5)))).values()];
    assert.equal(known.length, 5);
    await trending.apply(
      'test',
      0,
      known.flatMap((item, i) =>
        Array.from({ length: 5 - i }, (_, k) => ({
          itemId: item.itemId,
          category: item.categoryL1,
          ts: Date.now(),
          offset: String(i * 10 + k),
        })),
      ),
    );
    metrics = new Registry();
    feeds = startFeedService({ config, log, metrics });
    await until('the champion to load', async () => feeds?.modelVersion());
  });

  after(async () => {
    await feeds?.close();
    if (redis) {
      await redis.flushdb();
      redis.disconnect();
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('drops purchased and unavailable items', async (t) => {
    if (skipped) return t.skip('services down');
    const [user] = await batchUsers();
    assert.ok(user);
    const cands = (await new CandidateStore(redis).readCandidates(user, version)).items;
    const [bought, gone] = [cands[0]?.itemId as string, cands[1]?.itemId as string];
    const catalog = new CatalogStore(redis, { cacheTtlMs: 0, cacheSize: 0 });
    const goneItem = (await catalog.get([gone])).get(gone);
    assert.ok(goneItem);
    await catalog.upsert([{ ...goneItem, isAvailable: false }]);
    await new SessionFeatureStore(redis, config.features).apply(
      events(user, [[bought, 'purchase']]),
    );
    // A purchase counts at once (the user's features are read per request). Nothing here
    // forwards the catalog change message to the service (the server does, see
    // server-live.test.ts), so the item made unavailable drops out once the service's cached
    // copy is older than RECSYS_SERVING_CATALOG_TTL_MS (1 s here) and was read again; the
    // warm-up may have just cached it as available.
    const feed = await (feeds as FeedService).getFeed(user, 100);
    assert.ok(feed.items.length > 0);
    assert.ok(!feed.items.some((i) => i.itemId === bought), 'purchased item excluded');
    await until(
      'the unavailable item to leave the feed',
      async () => {
        const ids = (await (feeds as FeedService).getFeed(user, 100)).items.map((i) => i.itemId);
        return ids.length > 0 && !ids.includes(gone) && !ids.includes(bought);
      },
      7000,
    );
  });

  it('ranks a batch user with the champion: sources, model version, diversity', async (t) => {
    if (skipped) return t.skip('services down');
    const users = await batchUsers();
    for (const user of users.slice(1, 6)) {
      const feed = await (feeds as FeedService).getFeed(user, 20);
      assert.equal(feed.items.length, 20);
      assert.equal(feed.modelVersion, champion);
      assert.equal(feed.userId, user);
      assert.ok(feed.latencyMs > 0);
      assert.ok(
        feed.items.some((i) => i.source === 'batch'),
        'batch candidates present',
      );
      for (const item of feed.items) {
        assert.ok(['batch', 'covis', 'trending', 'popularity'].includes(item.source));
        assert.ok(Number.isFinite(item.score));
      }
      assert.equal(new Set(feed.items.map((i) => i.itemId)).size, 20, 'no duplicates');
      checkDiversity(feed);
    }
  });

  it("serves a new batch version's candidates from the next request on, and the old ones after a rollback", async (t) => {
    if (skipped) return t.skip('services down');
    const service = feeds as FeedService;
    const user = (await batchUsers())[7] as string;
    const batchIds = (feed: Feed): string[] =>
      feed.items
        .filter((i) => i.source === 'batch')
        .map((i) => i.itemId)
        .sort();
    const cacheCount = async (result: string): Promise<number> =>
      ((await metrics.getSingleMetric('recsys_feed_user_cache_total')?.get())?.values ?? []).find(
        (v) => v.labels.result === result,
      )?.value ?? 0;
    const hits = await cacheCount('hit');
    const before = batchIds(await service.getFeed(user, 200));
    assert.ok(before.length > 0);
    assert.deepEqual(batchIds(await service.getFeed(user, 200)), before);
    assert.ok((await cacheCount('hit')) > hits, 'the second feed used the kept candidates');

    // A new version (made by hand: this user's candidates only) goes live.
    const next = version + 1000;
    await redis.set(BATCH.candidates(user, next), 'new-item-a,5 new-item-b,4');
    await redis.set(BATCH.current, String(next));
    try {
      assert.deepEqual(batchIds(await service.getFeed(user, 200)), ['new-item-a', 'new-item-b']);
    } finally {
      await redis.set(BATCH.current, String(version));
      await redis.del(BATCH.candidates(user, next));
    }
    assert.deepEqual(batchIds(await service.getFeed(user, 200)), before);
  });

  it('gives a brand-new user trending and popular items, then neighbours of what they touched', async (t) => {
    if (skipped) return t.skip('services down');
    const user = uniq('newbie');
    const cold = await (feeds as FeedService).getFeed(user, 20);
    assert.equal(cold.items.length, 20);
    assert.ok(cold.items.every((i) => i.source === 'trending' || i.source === 'popularity'));
    const all = await (feeds as FeedService).getFeed(user, 200);
    assert.ok(
      all.items.some((i) => i.source === 'trending'),
      JSON.stringify(all.items.slice(0, 60)),
    );
    checkDiversity(cold);

    // Items with neighbours, from the live batch; the user views two of them.
    const [, keys] = await redis.scan('0', 'MATCH', `nb:v${version}:*`, 'COUNT', 5000);
    const touched = keys.slice(0, 2).map((k) => k.slice(`nb:v${version}:`.length));
    assert.equal(touched.length, 2);
    await new SessionFeatureStore(redis, config.features).apply(
      events(
        user,
        touched.map((i) => [i, 'view']),
      ),
    );
    const nb = await new CandidateStore(redis).readNeighbours(touched, version);
    const expected = new Set([...nb.values()].flat().map((n) => n.itemId));
    const warm = await (feeds as FeedService).getFeed(user, 50);
    const covis = warm.items.filter((i) => i.source === 'covis');
    assert.ok(covis.length > 0, `co-visitation items in ${JSON.stringify(warm.items)}`);
    assert.ok(covis.every((i) => expected.has(i.itemId)));
    checkDiversity(warm);
  });

  it('demotes items shown fatigueImpressions times without an interaction', async (t) => {
    if (skipped) return t.skip('services down');
    const user = (await batchUsers())[7] as string;
    const before = await (feeds as FeedService).getFeed(user, 30);
    const tired = before.items[0]?.itemId as string;
    const store = new ImpressionStore(redis);
    for (let i = 0; i < config.serving.fatigueImpressions; i++) {
      await store.record([{ userId: user, itemIds: [tired], partition: 0, offset: String(i) }]);
    }
    // A redelivered record is not counted twice.
    await store.record([{ userId: user, itemIds: [tired], partition: 0, offset: '0' }]);
    assert.equal((await store.read(user)).get(tired), config.serving.fatigueImpressions);
    const afterFeed = await (feeds as FeedService).getFeed(user, 30);
    const pos = afterFeed.items.findIndex((i) => i.itemId === tired);
    assert.ok(pos === -1 || pos >= 20, `fatigued item at position ${pos}`);
    // An interaction resets it.
    await store.reset([{ userId: user, itemId: tired }]);
    const again = await (feeds as FeedService).getFeed(user, 30);
    const back = again.items.findIndex((i) => i.itemId === tired);
    assert.ok(back >= 0 && back < 3, `reset item at position ${back}`);
  });

  it('writes every feed to the served topic (kcat) and the impressions role counts it', async (t) => {
    if (skipped) return t.skip('services down');
    const group = uniq('test-impressions');
    const role = startImpressions({ config, log, metrics: new Registry(), groupId: group });
    try {
      await role.ready;
      const user = uniq('served');
      const feed = await (feeds as FeedService).getFeed(user, 10);
      const type = avro.Type.forSchema(readSchema('ServedFeed') as unknown as avro.Schema);
      const record = await until('the served record', async () => {
        const res = await runBytes(
          'kcat',
          [
            ...kcatKafka,
            '-C',
            '-t',
            config.kafka.topics.served,
            '-o',
            'beginning',
            '-e',
            '-q',
          ].concat(['-f', '%k\t%S\t%s\n']),
          { timeoutMs: 15_000 },
        );
        return parseKcat(res.stdout)
          .filter((r) => r.key === user)
          .map((r) => type.fromBuffer(r.value.subarray(5)) as ServedFeed)
          .find((r) => r.requestId === feed.requestId);
      });
      assert.equal(record.userId, user);
      assert.equal(record.modelVersion, champion);
      assert.deepEqual(
        record.items.map((i) => i.itemId),
        feed.items.map((i) => i.itemId),
      );
      assert.deepEqual(
        record.items.map((i) => i.source),
        feed.items.map((i) => i.source),
      );
      const store = new ImpressionStore(redis);
      const counts = await until('impressions', async () => {
        const m = await store.read(user);
        return m.size === feed.items.length ? m : null;
      });
      assert.ok([...counts.values()].every((n) => n === 1));
    } finally {
      await role.stop();
    }
  });

  it('answers readiness once model, Redis and the served log are up', async (t) => {
    if (skipped) return t.skip('services down');
    const report = await until('readiness', async () => {
      const r = await (feeds as FeedService).readiness();
      return r.ok ? r : null;
    });
    assert.deepEqual(Object.keys(report.checks).sort(), ['kafka', 'model', 'redis', 'warm']);
  });

  it('falls back to the last popular list while Redis is away, and is personal again after', async (t) => {
    if (skipped) return t.skip('services down');
    // A new user: no exclusions, so every popular item is among the rows and its facts read.
    const user = uniq('fallback-user');
    const target = new URL(config.redis.url);
    const proxy = await redisProxy(target.hostname, Number(target.port || 6379));
    const url = new URL(config.redis.url);
    url.port = String(proxy.port);
    const own = createRedis(url.toString(), 'test-fallback', { coalesceWrites: true });
    own.on('error', () => undefined); // refused connections while cut, as the server logs them
    const registry = new Registry();
    const deadlineMs = 300;
    const service = startFeedService({
      config: { ...config, serving: { ...config.serving, feedDeadlineMs: deadlineMs } },
      log,
      metrics: registry,
      redis: own,
    });
    try {
      const personal = await until('a personal feed', async () => {
        const f = await service.getFeed(user, 10);
        return f.modelVersion === champion ? f : null;
      });
      assert.equal(personal.items.length, 10);

      await proxy.cut();
      const fallback = await until('a fallback feed', async () => {
        const f = await service.getFeed(user, 10);
        return f.modelVersion === FALLBACK_VERSION ? f : null;
      });
      // The first 10 available items of the version's popular list, in its order.
      const popular = await new CandidateStore(redis).popular(null, version);
      const catalog = new CatalogStore(redis, { cacheTtlMs: 0, cacheSize: 0 });
      const facts = await catalog.get(popular.ids);
      const expected = popular.ids.filter((id) => facts.get(id)?.isAvailable).slice(0, 10);
      assert.deepEqual(
        fallback.items.map((i) => i.itemId),
        expected,
      );
      assert.ok(fallback.items.every((i) => i.source === 'popularity'));
      const fallbacks = (await registry.getSingleMetric('recsys_feed_fallbacks_total')?.get())
        ?.values[0]?.value;
      assert.ok((fallbacks ?? 0) >= 1, `recsys_feed_fallbacks_total ${fallbacks}`);

      await proxy.restore();
      await until('a personal feed after Redis came back', async () => {
        const f = await service.getFeed(user, 10);
        return f.modelVersion === champion ? f : null;
      });

      // Redis accepts connections and answers nothing: the deadline gives the fallback.
      await proxy.hold();
      const held = await until('a fallback feed at the deadline', async () => {
        const f = await service.getFeed(user, 10);
        return f.modelVersion === FALLBACK_VERSION ? f : null;
      });
      // At the deadline, not at once (a timer may fire a fraction of a millisecond early).
      assert.ok(held.latencyMs >= deadlineMs - 5, `answered after ${held.latencyMs} ms`);
      assert.deepEqual(
        held.items.map((i) => i.itemId),
        expected,
      );
      await proxy.restore();
      await until('a personal feed after the hold', async () => {
        const f = await service.getFeed(user, 10);
        return f.modelVersion === champion ? f : null;
      });
    } finally {
      await service.close();
      own.disconnect();
      await proxy.cut();
    }
  });

  it('measures getFeed latency over 1,000 calls with 200 candidates', async (t) => {
    if (skipped) return t.skip('services down');
    const user = (await batchUsers())[0] as string;
    const service = feeds as FeedService;
    for (let i = 0; i < 50; i++) await service.getFeed(user, 20);
    const ms: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const t0 = performance.now();
      await service.getFeed(user, 20);
      ms.push(performance.now() - t0);
    }
    ms.sort((a, b) => a - b);
    const rerank = (await metrics.getSingleMetric('recsys_rerank_seconds')?.get())?.values ?? [];
    const named = (name: string): number | undefined =>
      rerank.find((v) => (v as { metricName?: string }).metricName === name)?.value;
    const sum = named('recsys_rerank_seconds_sum') ?? 0;
    const count = named('recsys_rerank_seconds_count') ?? 1;
    t.diagnostic(
      `getFeed over 1000 sequential calls (${config.serving.candidates} candidates): p50 ${percentile(ms, 50).toFixed(2)} ms, p99 ${percentile(ms, 99).toFixed(2)} ms, max ${(ms.at(-1) as number).toFixed(2)} ms; rerank mean ${((sum / count) * 1000).toFixed(3)} ms`,
    );
    assert.ok(percentile(ms, 50) < 50);
  });

  it('hot-swaps a newly promoted model and keeps it when the next one is corrupt', async (t) => {
    if (skipped) return t.skip('services down');
    const registry = openRegistry(config.batch, log);
    const service = feeds as FeedService;
    try {
      const current = await registry.champion();
      assert.ok(current);
      const copy = join(dir, 'copy.onnx');
      await copyFile(current.onnxPath, copy);
      const { version: v2 } = await registry.register({
        onnxPath: copy,
        metrics: { ndcg_at_10: 0.99 },
        params: { note: 'hot swap test' },
      });
      // Requests keep flowing while the swap happens.
      const user = (await batchUsers())[2] as string;
      let stop = false;
      const traffic = (async () => {
        let n = 0;
        while (!stop) {
          const feed = await service.getFeed(user, 10);
          assert.ok(feed.modelVersion === champion || feed.modelVersion === v2);
          n++;
        }
        return n;
      })();
      const t0 = Date.now();
      await registry.setChampion(v2);
      await until('the new version', async () => service.modelVersion() === v2, 5000);
      t.diagnostic(`swapped to ${v2} in ${Date.now() - t0} ms (poll 200 ms)`);
      stop = true;
      assert.ok((await traffic) > 0);
      assert.equal((await service.getFeed(user, 10)).modelVersion, v2);

      const bad = join(dir, 'bad.onnx');
      await writeFile(bad, Buffer.from('this is not an onnx model'));
      const { version: v3 } = await registry.register({
        onnxPath: bad,
        metrics: { ndcg_at_10: 1 },
        params: {},
      });
      await registry.setChampion(v3);
      const failures = async (): Promise<number> =>
        (await metrics.getSingleMetric('recsys_model_load_failures_total')?.get())?.values[0]
          ?.value ?? 0;
      await until('the load failure', async () => (await failures()) >= 1, 5000);
      await new Promise((r) => setTimeout(r, 600));
      assert.equal(await failures(), 1, 'a failed version is not retried every poll');
      assert.equal(service.modelVersion(), v2);
      assert.equal((await service.getFeed(user, 10)).modelVersion, v2);
      const info = (await metrics.getSingleMetric('recsys_model_info')?.get())?.values ?? [];
      assert.deepEqual(
        info.map((v) => [v.labels.version, v.value]),
        [[v2, 1]],
      );
    } finally {
      await registry.close();
    }
  });
});
