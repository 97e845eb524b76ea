/**
 * Poison records do not stall a partition, against the real stack (Kafka, the registry, Redis
 * database 5, and a private Redis for OOM): the feature role meets, in one partition, an event
 * of a user whose key is of the wrong type (WRONGTYPE), one whose features make the script fail
 * (a Lua error), a value of a foreign schema, and an event that decodes but breaks the contract;
 * the records around and after them are applied once, the group commits past them, and the DLQ
 * (read with kcat, the schema with curl) holds each bad record byte for byte with its reason.
 * Under OOM (`noeviction`), records go to the DLQ after a bounded number of attempts, and the
 * partition goes on once memory is back. The impressions role dead-letters what it cannot use.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { createEncoder, registerSchema, subjectsFor } from '../../../schemas/index.js';
import type { DlqRecord, ServedFeed, UserEvent } from '../../../schemas/types.js';
import {
  TRENDING,
  userEventIdsKey,
  userFeaturesKey,
  userImpressionsKey,
} from '../../../store/keys.js';
import { ensureTopics } from '../../../stream/kafka.js';
import { startFeatures } from '../../../stream/roles/features.js';
import { startImpressions } from '../../../stream/roles/impressions.js';
import { AvroReader, deleteTopics, freePort, readTopic } from '../ingest/bridge-process.js';
import { config, log, requireServices, testKafka, uniq } from '../harness.js';
import { isolatedEnv, testConfig, waitCommitted } from './events.js';

const DB = 5;
const redisUrl = `${config.redis.url}/${DB}`;
const redis = new Redis(redisUrl, { maxRetriesPerRequest: 2, lazyConnect: true });
const topics: string[] = [];
const keys: string[] = [];
const children: ChildProcess[] = [];

after(async () => {
  await deleteTopics(topics).catch(() => undefined);
  if (keys.length > 0) await redis.unlink(...keys).catch(() => undefined);
  // The trending sets these events filled (database 5 is this test's; nothing else counts there).
  const trend = await redis.keys('{trend}:*').catch(() => [] as string[]);
  if (trend.length > 0) await redis.unlink(...trend).catch(() => undefined);
  redis.disconnect();
  for (const c of children) c.kill('SIGKILL');
});

/** One partition, so bad and good records are one ordered stream; few attempts, quick tests. */
function env(overrides: Record<string, string> = {}): Record<string, string> {
  const e = isolatedEnv({
    RECSYS_REDIS_URL: redisUrl,
    RECSYS_TOPIC_PARTITIONS: '1',
    RECSYS_CONSUMER_POISON_ATTEMPTS: '2',
    RECSYS_CONSUMER_OOM_ATTEMPTS: '3',
    RECSYS_GROUP_IMPRESSIONS: uniq('st-impressions'),
    ...overrides,
  });
  topics.push(e.RECSYS_TOPIC_EVENTS as string, e.RECSYS_TOPIC_DLQ as string);
  topics.push(e.RECSYS_TOPIC_SERVED as string);
  return e;
}

function event(userId: string, over: Partial<UserEvent> = {}): UserEvent {
  return {
    eventId: crypto.randomUUID(),
    userId,
    sessionId: null,
    itemId: `${userId}-item`,
    type: 'view',
    ts: Date.now(),
    context: null,
    value: null,
    receivedAt: Date.now(),
    source: 'http',
    ...over,
  };
}

/** Writes raw values (already framed) to `topic` in this order, keyed as given. */
async function produce(
  cfg: ReturnType<typeof testConfig>,
  topic: string,
  messages: { key: string; value: Buffer }[],
): Promise<void> {
  const kafka = testKafka('test-poison', cfg);
  await ensureTopics(kafka, cfg.kafka, log);
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    await producer.send({ topic, acks: -1, messages });
  } finally {
    await producer.disconnect();
  }
}

async function encoderOf<T>(cfg: ReturnType<typeof testConfig>, name: 'UserEvent' | 'ServedFeed') {
  const subject = subjectsFor(cfg.kafka.topics).find((s) => s.name === name);
  if (!subject) throw new Error(`no ${name} subject`);
  return createEncoder<T>(await registerSchema(cfg.registry.url, subject), subject.schema);
}

/** A record of a schema no topic of ours uses, registered under its own subject. */
async function foreignValue(cfg: ReturnType<typeof testConfig>, userId: string): Promise<Buffer> {
  const schema = {
    type: 'record',
    name: 'Thing',
    namespace: 'elsewhere',
    fields: [{ name: 'userId', type: 'string' }],
  };
  const id = await registerSchema(cfg.registry.url, { subject: uniq('foreign-value'), schema });
  return createEncoder<{ userId: string }>(id, schema).encode({ userId });
}

/** The DLQ topic's records, read with kcat and decoded with the schema fetched by curl. */
async function dlq(topic: string): Promise<{ key: string | null; value: DlqRecord }[]> {
  const reader = new AvroReader();
  const out: { key: string | null; value: DlqRecord }[] = [];
  for (const r of await readTopic(topic)) {
    out.push({
      key: r.key ? r.key.toString() : null,
      value: await reader.decode<DlqRecord>(r.value as Buffer),
    });
  }
  return out;
}

async function deadLetterCounts(registry: Registry): Promise<Record<string, number>> {
  const metric = registry.getSingleMetric('recsys_consumer_dead_letters_total');
  const out: Record<string, number> = {};
  for (const v of (await metric?.get())?.values ?? []) {
    out[`${v.labels.role} ${v.labels.reason}`] = v.value;
  }
  return out;
}

const total = async (r: Redis, userId: string): Promise<number> =>
  Number((await r.hget(userFeaturesKey(userId), 'n')) ?? 0);

describe('poison records (real Kafka, registry and Redis)', () => {
  it('feature role: WRONGTYPE, a Lua error, a foreign schema and an invalid event go to the DLQ; the partition goes on', async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'redis'))) return;
    const e = env();
    const cfg = testConfig(e);
    const p = uniq('poison');
    const [good1, good2, wrong, lua, later] = ['g1', 'g2', 'wrongtype', 'lua', 'later'].map(
      (s) => `${p}-${s}`,
    ) as [string, string, string, string, string];
    keys.push(
      ...[good1, good2, wrong, lua, later].flatMap((u) => [userFeaturesKey(u), userEventIdsKey(u)]),
    );
    // A string where the user's feature hash belongs, and a hash whose offset field the script
    // cannot parse ('garbage' has no ':'): its arithmetic on nil is a Lua runtime error.
    await redis.set(userFeaturesKey(wrong), 'not a hash');
    await redis.hset(userFeaturesKey(lua), { n: '1', o: 'garbage' });

    const events = await encoderOf<UserEvent>(cfg, 'UserEvent');
    const bad = {
      wrongtype: events.encode(event(wrong)),
      lua: events.encode(event(lua)),
      foreign: await foreignValue(cfg, `${p}-foreign`),
      invalid: events.encode(event(`${p} bad}user`)),
    };
    const good = (u: string, n: number) =>
      Array.from({ length: n }, () => ({ key: u, value: events.encode(event(u)) }));
    // All in one partition, in this order: good records before, between and after each bad one.
    await produce(cfg, cfg.kafka.topics.events, [
      ...good(good1, 3),
      { key: wrong, value: bad.wrongtype },
      ...good(good2, 2),
      { key: lua, value: bad.lua },
      ...good(good1, 2),
      { key: `${p}-foreign`, value: bad.foreign },
      ...good(good2, 2),
      { key: `${p}-invalid`, value: bad.invalid },
      ...good(good1, 1),
    ]);

    const registry = new Registry();
    const role = startFeatures({ config: cfg, log, metrics: registry });
    try {
      await role.ready;
      await waitCommitted(cfg.kafka.topics.events, cfg.consumer.groups.features, 60_000);
      // Records after all four are applied, and the good ones of the chunks that failed
      // exactly once (a split retries parts; the rest were not applied again).
      assert.equal(await total(redis, good1), 6);
      assert.equal(await total(redis, good2), 4);
      // Trending counted each of them once too (counts and offsets go to Redis every second).
      const trend = TRENDING.window(cfg.trending.windowsSec[0] as number, null);
      assert.deepEqual(await redis.zmscore(trend, `${good1}-item`, `${good2}-item`), ['6', '4']);
      await produce(cfg, cfg.kafka.topics.events, good(later, 2));
      await waitCommitted(cfg.kafka.topics.events, cfg.consumer.groups.features, 60_000);
      assert.equal(await total(redis, later), 2);
      assert.equal(await redis.type(userFeaturesKey(wrong)), 'string');

      const letters = await dlq(cfg.kafka.topics.dlq);
      const by = new Map(letters.map((l) => [l.value.reason, l]));
      assert.deepEqual(letters.map((l) => l.value.reason).sort(), [
        'foreign_schema',
        'invalid_record',
        'redis_script_error',
        'redis_wrongtype',
      ]);
      const expectBytes: Record<string, Buffer> = {
        redis_wrongtype: bad.wrongtype,
        redis_script_error: bad.lua,
        foreign_schema: bad.foreign,
        invalid_record: bad.invalid,
      };
      for (const [reason, bytes] of Object.entries(expectBytes)) {
        const l = by.get(reason);
        assert.ok(l, `no ${reason} dead letter`);
        assert.ok(Buffer.from(l.value.original).equals(bytes), `${reason}: original bytes`);
        assert.match(l.value.message, /^\S+\/0@\d+: .* \[role features\]$/s);
        assert.equal(l.value.topic, cfg.kafka.topics.events);
      }
      assert.match(by.get('redis_wrongtype')?.value.message ?? '', /WRONGTYPE/);
      assert.equal(by.get('redis_wrongtype')?.key, wrong);
      assert.match(by.get('redis_script_error')?.value.message ?? '', /user_script:\d+: attempt/);
      assert.match(
        by.get('foreign_schema')?.value.message ?? '',
        /elsewhere\.Thing, not recsys\.UserEvent/,
      );
      assert.equal(by.get('invalid_record')?.value.field, 'userId');
      assert.deepEqual(await deadLetterCounts(registry), {
        'features foreign_schema': 1,
        'features invalid_record': 1,
        'features redis_script_error': 1,
        'features redis_wrongtype': 1,
      });
    } finally {
      await role.stop();
    }
  });

  it('feature role under OOM (noeviction): bounded attempts, then the DLQ; goes on once memory is back', async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry'))) return;
    // A private Redis: the shared one's settings are not ours to change.
    const port = await freePort();
    const server = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'].concat([
        '--maxmemory',
        '2mb',
        '--maxmemory-policy',
        'noeviction',
      ]),
      { stdio: 'ignore' },
    );
    children.push(server);
    const own = new Redis(`redis://127.0.0.1:${port}`, { maxRetriesPerRequest: 20 });
    // It may not listen yet: the client reconnects until it does.
    own.on('error', () => undefined);
    try {
      await own.ping();
      // Fill it until it refuses writes.
      const filler = 'x'.repeat(4096);
      let filled = 0;
      for (;;) {
        try {
          await own.set(`fill:${filled++}`, filler);
        } catch (err) {
          assert.match((err as Error).message, /^OOM /);
          break;
        }
      }
      const e = env({ RECSYS_REDIS_URL: `redis://127.0.0.1:${port}` });
      const cfg = testConfig(e);
      const u = uniq('oom-user');
      const events = await encoderOf<UserEvent>(cfg, 'UserEvent');
      const first = [event(u), event(u)].map((v) => events.encode(v));
      await produce(
        cfg,
        cfg.kafka.topics.events,
        first.map((value) => ({ key: u, value })),
      );

      const registry = new Registry();
      const role = startFeatures({ config: cfg, log, metrics: registry });
      try {
        await role.ready;
        await waitCommitted(cfg.kafka.topics.events, cfg.consumer.groups.features, 90_000);
        const letters = await dlq(cfg.kafka.topics.dlq);
        assert.deepEqual(
          letters.map((l) => l.value.reason),
          ['redis_oom', 'redis_oom'],
        );
        assert.ok(Buffer.from(letters[0]?.value.original as Uint8Array).equals(first[0] as Buffer));
        assert.match(letters[0]?.value.message ?? '', /OOM command not allowed/);
        assert.deepEqual(await deadLetterCounts(registry), { 'features redis_oom': 2 });
        // 3 attempts on the chunk, then 2 for each record alone.
        const failures = registry.getSingleMetric('recsys_consumer_handle_failures_total');
        const n = (await failures?.get())?.values.reduce((a, v) => a + v.value, 0);
        assert.equal(n, 3 + 2 * 2);

        // Memory back (deleting is allowed under OOM): the next records are applied.
        await own.flushall();
        await produce(cfg, cfg.kafka.topics.events, [{ key: u, value: events.encode(event(u)) }]);
        await waitCommitted(cfg.kafka.topics.events, cfg.consumer.groups.features, 60_000);
        assert.equal(await total(own, u), 1);
      } finally {
        await role.stop();
      }
    } finally {
      own.disconnect();
      server.kill('SIGKILL');
    }
  });

  it('impressions role: an undecodable value and another schema go to the DLQ, not the bin', async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'redis'))) return;
    const e = env();
    const cfg = testConfig(e);
    const u = uniq('impr-user');
    keys.push(userImpressionsKey(u));
    const feeds = await encoderOf<ServedFeed>(cfg, 'ServedFeed');
    const events = await encoderOf<UserEvent>(cfg, 'UserEvent');
    const feed = (requestId: string): Buffer =>
      feeds.encode({
        requestId,
        userId: u,
        ts: Date.now(),
        items: [{ itemId: `${u}-i1`, score: 1, source: 'batch' }],
        modelVersion: '1',
        latencyMs: 3,
      });
    const garbage = Buffer.from('not avro at all');
    // An event on the served topic: it decodes (its writer schema is registered), but it is not
    // a served feed.
    const misplaced = events.encode(event(u));
    await produce(cfg, cfg.kafka.topics.served, [
      { key: u, value: feed(uniq('r')) },
      { key: u, value: garbage },
      { key: u, value: misplaced },
      { key: u, value: feed(uniq('r')) },
    ]);
    // The events topic exists for the role's subscription.
    const registry = new Registry();
    const role = startImpressions({ config: cfg, log, metrics: registry });
    try {
      await role.ready;
      await waitCommitted(cfg.kafka.topics.served, cfg.consumer.groups.impressions, 60_000);
      assert.equal(Number(await redis.hget(userImpressionsKey(u), `${u}-i1`)), 2);
      const letters = await dlq(cfg.kafka.topics.dlq);
      assert.deepEqual(
        letters.map((l) => l.value.reason),
        ['undecodable', 'foreign_schema'],
      );
      assert.ok(Buffer.from(letters[0]?.value.original as Uint8Array).equals(garbage));
      assert.ok(Buffer.from(letters[1]?.value.original as Uint8Array).equals(misplaced));
      assert.match(
        letters[1]?.value.message ?? '',
        /recsys\.UserEvent, not recsys\.ServedFeed.*\[role impressions\]$/,
      );
      assert.deepEqual(await deadLetterCounts(registry), {
        'impressions undecodable': 1,
        'impressions foreign_schema': 1,
      });
    } finally {
      await role.stop();
    }
  });
});
