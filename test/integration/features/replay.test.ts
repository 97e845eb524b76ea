/**
 * The feature consumer end to end on real Kafka and Redis: 10,000 events once, then the same
 * records redelivered (a new group from the beginning) and the same events re-sent (new offsets):
 * Redis (features and online co-visitation lists) is byte-for-byte what one pass left. And a SIGKILL mid-stream: after a restart every
 * user's counts equal their distinct events, none missing, none double.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { startFeatures } from '../../../stream/roles/features.js';
import { CatalogStore } from '../../../store/catalog.js';
import { onlineNeighboursKey, userFeaturesKey } from '../../../store/keys.js';
import type { UserEvent } from '../../../schemas/types.js';
import { BridgeProcess, deleteTopics, freePort } from '../ingest/bridge-process.js';
import { config, log, requireServices, uniq } from '../harness.js';
import {
  isolatedEnv,
  makeEvents,
  produceEvents,
  testConfig,
  waitCommitted,
} from '../stream/events.js';

const redis = new Redis(config.redis.url, { maxRetriesPerRequest: 2, lazyConnect: true });
const topics: string[] = [];
const users = new Set<string>();
const items = new Set<string>();

after(async () => {
  await deleteTopics(topics).catch(() => undefined);
  const keys = [...users].map(userFeaturesKey);
  keys.push(...[...items].map(onlineNeighboursKey));
  for (let i = 0; i < keys.length; i += 500) await redis.unlink(...keys.slice(i, i + 500));
  redis.disconnect();
});

/** Runs the feature role in this process until `group` committed the whole topic. */
async function onePass(env: Record<string, string>): Promise<void> {
  const cfg = testConfig(env);
  const role = startFeatures({ config: cfg, log, metrics: new Registry() });
  try {
    await role.ready;
    await waitCommitted(cfg.kafka.topics.events, cfg.consumer.groups.features);
  } finally {
    await role.stop();
  }
}

/** DUMP of each key (hex; '' when absent). */
async function snapshot(keys: string[]): Promise<Map<string, string>> {
  const pipeline = redis.pipeline();
  for (const k of keys) pipeline.dumpBuffer(k);
  const replies = (await pipeline.exec()) ?? [];
  return new Map(
    keys.map((k, i) => [k, (replies[i]?.[1] as Buffer | null)?.toString('hex') ?? '']),
  );
}

function expectedCounts(events: UserEvent[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const e of events) m.set(e.userId, (m.get(e.userId) ?? 0) + 1);
  return m;
}

async function totals(userIds: string[]): Promise<Map<string, number>> {
  const pipeline = redis.pipeline();
  for (const u of userIds) pipeline.hget(userFeaturesKey(u), 'n');
  const replies = (await pipeline.exec()) ?? [];
  return new Map(userIds.map((u, i) => [u, Number(replies[i]?.[1] ?? 0)]));
}

describe('feature consumer', () => {
  it('leaves Redis byte-for-byte identical after a redelivery and a re-send of 10,000 events', async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'redis'))) return;
    const prefix = uniq('rp');
    const env = isolatedEnv();
    topics.push(env.RECSYS_TOPIC_EVENTS as string, env.RECSYS_TOPIC_DLQ as string);
    // 1,250 users x 8 events (re-sends are recognised by the user's eventId window, Kafka
    // redelivery at any distance); half the items are in the catalog.
    const events = makeEvents(prefix, 1250, 8);
    const userIds = [...new Set(events.map((e) => e.userId))];
    userIds.forEach((u) => users.add(u));
    const itemIds = [...new Set(events.map((e) => e.itemId))];
    itemIds.forEach((i) => items.add(i));
    const keys = [...userIds.map(userFeaturesKey), ...itemIds.map(onlineNeighboursKey)];
    const catalog = new CatalogStore(redis, { cacheTtlMs: 0, cacheSize: 0 });
    await catalog.upsert(
      Array.from({ length: 100 }, (_, i) => ({
        itemId: `${prefix}-i${i * 2}`,
        categoryL1: `cat${i % 7}`,
        categoryL2: null,
        price: 10,
        isAvailable: true,
        createdAt: Date.now(),
      })),
    );

    await produceEvents(env, events);
    await onePass(env);
    const once = await snapshot(keys);
    assert.ok(
      userIds.every((u) => (once.get(userFeaturesKey(u)) ?? '').length > 0),
      'every user has features',
    );
    // Each user's 8 events pair with their previous items: every item has online neighbours.
    assert.ok(
      itemIds.every((i) => (once.get(onlineNeighboursKey(i)) ?? '').length > 0),
      'every item has online neighbours',
    );
    assert.deepEqual(await totals(userIds), expectedCounts(events));

    // The same records again: a new group reads the topic from the beginning.
    await onePass({ ...env, RECSYS_GROUP_FEATURES: uniq('again') });
    assert.deepEqual(await snapshot(keys), once, 'redelivery changed Redis');

    // The same events again at new offsets (re-sent by clients), read by the first group.
    await produceEvents(env, events);
    await onePass(env);
    assert.deepEqual(await snapshot(keys), once, 're-sent events changed Redis');
  });

  it('counts every distinct event exactly once across a SIGKILL mid-stream', async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'redis'))) return;
    const prefix = uniq('kill');
    const port = await freePort();
    const env = isolatedEnv({
      RECSYS_HTTP_PORT: String(port),
      RECSYS_CONSUMER_COMMIT_INTERVAL_MS: '200',
      RECSYS_CONSUMER_SESSION_TIMEOUT_MS: '6000',
    });
    topics.push(env.RECSYS_TOPIC_EVENTS as string, env.RECSYS_TOPIC_DLQ as string);
    const events = makeEvents(prefix, 500, 20);
    // 500 re-sent copies of events sent shortly before (what a bridge restart can cause).
    const resent = events.slice(9000, 9500);
    const stream = [...events.slice(0, 9500), ...resent, ...events.slice(9500)];
    const userIds = [...new Set(events.map((e) => e.userId))];
    userIds.forEach((u) => users.add(u));
    // Their online neighbour lists are removed after.
    events.forEach((e) => items.add(e.itemId));

    const setup = { env: { ...process.env, ...env }, baseUrl: `http://127.0.0.1:${port}` };
    const start = () =>
      BridgeProcess.start(
        {
          ...setup,
          topics: { events: '', dlq: '', served: '' },
          port,
          clientId: '',
          ingestToken: '',
          postHeaders: {},
        },
        ['features'],
      );
    // The topic must exist before the consumer subscribes; the first batch creates it.
    await produceEvents(env, stream.slice(0, 1));
    let consumer = start();
    await consumer.waitReady();
    const producing = produceEvents(env, stream.slice(1), 4000);
    await new Promise((r) => setTimeout(r, 1500));
    await consumer.kill('SIGKILL');
    const before = [...(await totals(userIds)).values()].reduce((a, b) => a + b, 0);
    consumer = start();
    try {
      await consumer.waitReady();
      await producing;
      await waitCommitted(env.RECSYS_TOPIC_EVENTS as string, env.RECSYS_GROUP_FEATURES as string);
    } finally {
      await consumer.kill('SIGTERM');
    }
    const got = await totals(userIds);
    const want = expectedCounts(events);
    const sum = [...got.values()].reduce((a, b) => a + b, 0);
    t.diagnostic(
      `applied before the kill: ${before}; after the restart: ${sum} of ${events.length}`,
    );
    assert.ok(before > 0 && before < events.length, `the kill came mid-stream (${before} applied)`);
    assert.deepEqual(got, want);
  });
});
