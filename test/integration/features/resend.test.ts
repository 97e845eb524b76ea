/**
 * Re-sends far behind the latest event change nothing: the feature role over real Kafka and
 * Redis (database 5) applies 10,000 events of one user, then 1,000 of them again at new offsets
 * (the first 1,000, as a client replaying its oldest queue would), and the user's feature hash,
 * the trending counts, the online co-visitation lists and the applied counters are what they
 * were. A control user whose eventId window is deleted before its re-sends shows that the same
 * checks see a double application.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { startFeatures } from '../../../stream/roles/features.js';
import { CatalogStore } from '../../../store/catalog.js';
import {
  itemKey,
  onlineNeighboursKey,
  TRENDING,
  userEventIdsKey,
  userFeaturesKey,
} from '../../../store/keys.js';
import type { EventType, UserEvent } from '../../../schemas/types.js';
import { deleteTopics } from '../ingest/bridge-process.js';
import { config, log, requireServices, run, uniq } from '../harness.js';
import { isolatedEnv, produceEvents, testConfig, TYPES, waitCommitted } from '../stream/events.js';

const DB = 5;
const redisUrl = `${config.redis.url}/${DB}`;
const redis = new Redis(redisUrl, { maxRetriesPerRequest: 2, lazyConnect: true });
const topics: string[] = [];
const cleanup: string[] = [];

after(async () => {
  await deleteTopics(topics).catch(() => undefined);
  for (let i = 0; i < cleanup.length; i += 500) {
    await redis.unlink(...cleanup.slice(i, i + 500)).catch(() => undefined);
  }
  // The trending sets these events filled (database 5 is this test's; nothing else counts there).
  const trend = await redis.keys('{trend}:*').catch(() => [] as string[]);
  if (trend.length > 0) await redis.unlink(...trend).catch(() => undefined);
  redis.disconnect();
});

/** `n` events of one user on `items`, received now, happening over the last 40 minutes. */
function userEvents(userId: string, n: number, items: readonly string[]): UserEvent[] {
  const now = Date.now();
  return Array.from({ length: n }, (_, i) => ({
    eventId: crypto.randomUUID(),
    userId,
    sessionId: null,
    itemId: items[(i * 7) % items.length] as string,
    type: TYPES[i % TYPES.length] as EventType,
    ts: now - 40 * 60_000 + Math.floor((i * 39 * 60_000) / n),
    context: null,
    value: null,
    receivedAt: now,
    source: 'mqtt' as const,
  }));
}

/** DUMP of each key (hex; '' when absent). */
async function dumps(keys: readonly string[]): Promise<Map<string, string>> {
  const pipeline = redis.pipeline();
  for (const k of keys) pipeline.dumpBuffer(k);
  const replies = (await pipeline.exec()) ?? [];
  return new Map(
    keys.map((k, i) => [k, (replies[i]?.[1] as Buffer | null)?.toString('hex') ?? '']),
  );
}

/** Each item's count in the overall trending windows, `<window> <item>` -> count. */
async function trendingScores(
  windows: readonly number[],
  items: readonly string[],
): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const w of windows) {
    const scores = await redis.zmscore(TRENDING.window(w, null), ...items);
    items.forEach((item, i) => out.set(`${w} ${item}`, Number(scores[i] ?? 0)));
  }
  return out;
}

async function outcomes(registry: Registry): Promise<Record<string, number>> {
  const metric = registry.getSingleMetric('recsys_features_events_total');
  const values = (await metric?.get())?.values ?? [];
  const out: Record<string, number> = { applied: 0, redelivered: 0, duplicate: 0 };
  for (const v of values) out[String(v.labels.outcome)] = v.value;
  return out;
}

const sum = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);

describe('feature role: re-sends beyond the latest events', () => {
  it('changes nothing when 1,000 of a user’s first events come again after 10,000', async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'redis'))) return;
    const prefix = uniq('resend');
    const env = isolatedEnv({ RECSYS_REDIS_URL: redisUrl });
    topics.push(env.RECSYS_TOPIC_EVENTS as string, env.RECSYS_TOPIC_DLQ as string);
    const cfg = testConfig(env);
    const windows = cfg.trending.windowsSec;
    const [u, c] = [`${prefix}-u`, `${prefix}-control`];
    const uItems = Array.from({ length: 300 }, (_, i) => `${prefix}-i${i}`);
    const cItems = Array.from({ length: 50 }, (_, i) => `${prefix}-c${i}`);
    const categories = Array.from({ length: 5 }, (_, k) => `${prefix}-cat${k}`);
    const catalog = new CatalogStore(redis, { cacheTtlMs: 0, cacheSize: 0 });
    // Half of the user's items have a category (affinities, category trending).
    await catalog.upsert(
      uItems
        .filter((_, i) => i % 2 === 0)
        .map((itemId, i) => ({
          itemId,
          categoryL1: categories[i % categories.length] as string,
          categoryL2: null,
          price: 10,
          isAvailable: true,
          createdAt: Date.now(),
        })),
    );
    const categoryWindows = windows.flatMap((w) => categories.map((k) => TRENDING.window(w, k)));
    cleanup.push(
      ...[u, c].flatMap((x) => [userFeaturesKey(x), userEventIdsKey(x)]),
      ...[...uItems, ...cItems].flatMap((i) => [onlineNeighboursKey(i), itemKey(i)]),
      ...categoryWindows,
    );
    const events = userEvents(u, 10_000, uItems);
    const control = userEvents(c, 1_100, cItems);

    const registry = new Registry();
    await produceEvents(env, [...events, ...control]);
    const role = startFeatures({ config: cfg, log, metrics: registry });
    try {
      await role.ready;
      await waitCommitted(cfg.kafka.topics.events, cfg.consumer.groups.features);
      const features = [u, c].map(userFeaturesKey);
      const neighbours = uItems.map(onlineNeighboursKey);
      const before = {
        hashes: await dumps([...features, ...categoryWindows, ...neighbours]),
        trending: await trendingScores(windows, uItems),
        control: await trendingScores(windows, cItems),
        counters: await outcomes(registry),
        total: Number(await redis.hget(userFeaturesKey(u), 'n')),
      };
      assert.equal(before.total, 10_000);
      assert.deepEqual(before.counters, { applied: 11_100, redelivered: 0, duplicate: 0 });
      // Every event is inside both trending windows, and co-visits were recorded.
      for (const w of windows) {
        assert.equal(
          sum(new Map([...before.trending].filter(([k]) => k.startsWith(`${w} `)))),
          10_000,
        );
      }
      assert.ok(neighbours.every((k) => (before.hashes.get(k) ?? '').length > 0));

      const mem = await run('redis-cli', ['-u', redisUrl, 'MEMORY', 'USAGE', userEventIdsKey(u)]);
      t.diagnostic(
        `MEMORY USAGE of the eventId window of a user with 10,000 events: ${mem.stdout.trim()} bytes`,
      );
      assert.ok(Number(mem.stdout) > 80_000 && Number(mem.stdout) < 90_000, mem.stdout);

      // The control user forgets its eventIds: its re-sends are applied a second time.
      await redis.unlink(userEventIdsKey(c));
      await produceEvents(env, [...events.slice(0, 1000), ...control.slice(0, 100)]);
      await waitCommitted(cfg.kafka.topics.events, cfg.consumer.groups.features);

      const afterHashes = await dumps([...features, ...categoryWindows, ...neighbours]);
      assert.notEqual(afterHashes.get(userFeaturesKey(c)), before.hashes.get(userFeaturesKey(c)));
      afterHashes.delete(userFeaturesKey(c));
      before.hashes.delete(userFeaturesKey(c));
      assert.deepEqual(afterHashes, before.hashes, 're-sent events changed Redis');
      assert.deepEqual(await trendingScores(windows, uItems), before.trending);
      assert.deepEqual(await outcomes(registry), {
        applied: 11_200,
        redelivered: 0,
        duplicate: 1000,
      });
      assert.equal(Number(await redis.hget(userFeaturesKey(c), 'n')), 1_200);
      const controlAfter = await trendingScores(windows, cItems);
      for (const w of windows) {
        const of = (m: Map<string, number>) =>
          sum(new Map([...m].filter(([k]) => k.startsWith(`${w} `))));
        assert.equal(of(controlAfter) - of(before.control), 100, `control in window ${w}`);
      }
    } finally {
      await role.stop();
    }
  });
});
