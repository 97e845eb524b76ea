/**
 * `npm run bench:stream`: the session-feature consumer on the real stack.
 *
 * Phases, in one run so the numbers share the machine's state:
 * 1. fill: BENCH_USERS users x BENCH_EVENTS_PER_USER events (default 100,000 x 10) written to a
 *    fresh events topic as the bridge writes them, and a catalog of BENCH_ITEMS items.
 * 2. baseline: a plain kafkajs consumer that only decodes the records (no Redis): what reading
 *    the topic costs on this machine.
 * 3. throughput: the feature role (`node dist/stream/main.js features`, its own group) consumes
 *    the whole topic; events/s from its first to its last commit. Redis memory before and after
 *    gives bytes per user (every user is active: all have features).
 * 4. freshness: the ingest bridge and the feature role run as processes; this process publishes
 *    BENCH_FRESH_RATE events/s (default 2,000) over MQTT for BENCH_DURATION_MS and listens on
 *    the feature-change channel. An event is fresh when the user's applied-event count covers
 *    it; latency = that moment - the MQTT publish call.
 *
 * Writes bench/results/stream-<time>.json and prints a summary.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import kafkajs from 'kafkajs';
import mqtt from 'mqtt';
import { createLogger, loadConfig, retry, sleep, startupRetry } from '../core/index.js';
import {
  createDecoder,
  createEncoder,
  registerSchema,
  subjectsFor,
  type EventType,
  type UserEvent,
} from '../schemas/index.js';
import { CatalogStore } from '../store/catalog.js';
import { createKafka, ensureTopics } from '../stream/kafka.js';
import { USER_FIELDS, userEventIdsKey, userFeaturesKey } from '../store/keys.js';
import { scanKeys } from '../store/redis.js';
import { discardMqttSession } from '../stream/index.js';
import { freePort, startReady, stopProcess } from './processes.js';
import { treeCpu } from './vegeta.js';
import {
  benchRedis,
  memoryUsageBytes,
  onFeatureChanges,
  redisCpuSec,
  usedMemoryBytes,
} from './redis.js';
import { applyLocalSecrets } from '../deploy/local/secrets.js';

// The local stack's secrets (the bridge's MQTT password, the JWT secret) unless set.
await applyLocalSecrets(process.cwd());

const num = (name: string, fallback: number): number => Number(process.env[name] ?? fallback);
const USERS = num('BENCH_USERS', 100_000);
const PER_USER = num('BENCH_EVENTS_PER_USER', 10);
const ITEMS = num('BENCH_ITEMS', 10_000);
const FRESH_RATE = num('BENCH_FRESH_RATE', 2000);
const DURATION_MS = num('BENCH_DURATION_MS', 20_000);
const WARMUP_MS = num('BENCH_WARMUP_MS', 3000);
const PUBLISHERS = num('BENCH_PUBLISHERS', 8);
const id = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
const root = process.cwd();
const log = createLogger(process.env.RECSYS_LOG_LEVEL ?? 'warn', 'bench');
const TYPES: EventType[] = [
  'view',
  'view',
  'view',
  'view',
  'click',
  'click',
  'add_to_cart',
  'like',
  'purchase',
];

const env: Record<string, string> = {
  RECSYS_TOPIC_EVENTS: `bench-${id}.events`,
  RECSYS_TOPIC_DLQ: `bench-${id}.dlq`,
  RECSYS_TOPIC_SERVED: `bench-${id}.served`,
  RECSYS_TOPIC_ITEMS: `bench-${id}.items`,
  RECSYS_GROUP_FEATURES: `bench-${id}-features`,
  RECSYS_MQTT_SHARE_GROUP: `bench-${id}`,
  RECSYS_MQTT_CLIENT_ID: `bench-${id}/bridge`,
  RECSYS_LOG_LEVEL: 'warn',
};
const config = loadConfig({ ...process.env, ...env });

function percentiles(values: number[]) {
  const s = Array.from(Float64Array.from(values).sort());
  const at = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? Number.NaN;
  return {
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    p999: at(0.999),
    max: s[s.length - 1] ?? NaN,
    samples: s.length,
  };
}

function kafkaClient(): kafkajs.Kafka {
  return createKafka(config.kafka, log, 'bench', { logLevel: kafkajs.logLevel.NOTHING });
}

function startRole(role: string, port: number): Promise<ChildProcess> {
  return startReady('dist/stream/main.js', [role], env, port, { timeoutMs: 60_000 });
}

/** Waits until `group` committed the topic's end; returns the time of the first and last change. */
async function waitCommitted(
  group: string,
  topic: string,
  total: number,
): Promise<{ firstMs: number; lastMs: number }> {
  const admin = kafkaClient().admin();
  await admin.connect();
  let first = 0;
  let last = 0;
  try {
    for (;;) {
      const [c] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
      const done = (c?.partitions ?? []).reduce((s, p) => s + Math.max(0, Number(p.offset)), 0);
      const now = performance.now();
      if (done > 0 && first === 0) first = now;
      if (done >= total) {
        last = now;
        break;
      }
      await sleep(100);
    }
  } finally {
    await admin.disconnect();
  }
  return { firstMs: first, lastMs: last };
}

async function fill(): Promise<number> {
  const kafka = kafkaClient();
  await retry(() => ensureTopics(kafka, config.kafka, log), startupRetry('kafka topics', log));
  const subject = subjectsFor(config.kafka.topics).find((s) => s.name === 'UserEvent');
  if (!subject) throw new Error('no UserEvent subject');
  const encoder = createEncoder<UserEvent>(
    await registerSchema(config.registry.url, subject),
    subject.schema,
  );
  const producer = kafka.producer({
    createPartitioner: kafkajs.Partitioners.DefaultPartitioner,
    idempotent: true,
    maxInFlightRequests: 1,
  });
  await retry(() => producer.connect(), startupRetry('kafka producer connect', log));
  const now = Date.now();
  let n = 0;
  const batch: { key: string; value: Buffer }[] = [];
  for (let k = 0; k < PER_USER; k++) {
    for (let u = 0; u < USERS; u++) {
      // Popularity skew: item index squared toward the head.
      const r = ((u * 2654435761 + k * 40503) >>> 0) / 2 ** 32;
      const e: UserEvent = {
        eventId: randomUUID(),
        userId: `b${id}-${u}`,
        sessionId: null,
        itemId: `it-${Math.floor(r * r * ITEMS)}`,
        type: TYPES[(u + k) % TYPES.length] as EventType,
        ts: now - (PER_USER - k) * 120_000,
        context: null,
        value: null,
        receivedAt: now,
        source: 'mqtt',
      };
      batch.push({ key: e.userId, value: encoder.encode(e) });
      n++;
      if (batch.length === 5000) {
        await producer.send({
          topic: config.kafka.topics.events,
          acks: -1,
          messages: batch.splice(0),
        });
      }
    }
  }
  if (batch.length)
    await producer.send({ topic: config.kafka.topics.events, acks: -1, messages: batch.splice(0) });
  await producer.disconnect();
  return n;
}

async function baseline(total: number): Promise<number> {
  const consumer = kafkaClient().consumer({
    groupId: `bench-${id}-baseline`,
    maxWaitTimeInMs: 100,
  });
  const decoder = createDecoder<UserEvent>(config.registry.url);
  await consumer.connect();
  await consumer.subscribe({ topics: [config.kafka.topics.events], fromBeginning: true });
  let seen = 0;
  let t0 = 0;
  let t1 = 0;
  await new Promise<void>((resolve) => {
    void consumer.run({
      partitionsConsumedConcurrently: config.consumer.concurrency,
      eachBatch: async ({ batch }) => {
        if (t0 === 0) t0 = performance.now();
        await decoder.prepare(batch.messages.map((m) => m.value));
        for (const m of batch.messages) decoder.decode(m.value);
        seen += batch.messages.length;
        if (seen >= total) {
          t1 = performance.now();
          resolve();
        }
      },
    });
  });
  await consumer.disconnect();
  return Math.round((total * 1000) / (t1 - t0));
}

async function freshness() {
  const users = Array.from({ length: PUBLISHERS }, (_, i) => ({
    username: `fresh-${id}-${i}`,
    password: `pw-${id}-${i}`,
  }));
  for (const u of users) {
    await new Promise<void>((resolve, reject) => {
      const c = spawn(
        process.execPath,
        [join(root, 'dist/deploy/local/cli.js'), 'mqtt-user', u.username, u.password],
        { stdio: 'ignore' },
      );
      c.on('close', (code) =>
        code === 0 ? resolve() : reject(new Error(`mqtt-user exited ${code}`)),
      );
    });
  }
  const bridge = await startRole('ingest', await freePort());
  const features = await startRole('features', await freePort());
  const sent = new Map<string, number[]>();
  const seen = new Map<string, number>();
  const latencies: { at: number; ms: number }[] = [];
  const sub = benchRedis(config.redis.url, 'bench-stream-sub', true);
  const reader = benchRedis(config.redis.url, 'bench-stream');
  const changes = await onFeatureChanges(sub, (userId) => {
    const times = sent.get(userId);
    if (!times) return;
    void reader.hget(userFeaturesKey(userId), USER_FIELDS.total).then((n) => {
      const now = performance.now();
      const applied = Number(n);
      for (let i = seen.get(userId) ?? 0; i < Math.min(applied, times.length); i++) {
        latencies.push({ at: times[i] as number, ms: now - (times[i] as number) });
      }
      seen.set(userId, Math.max(seen.get(userId) ?? 0, applied));
    });
  });
  for (const u of users) await changes.add(u.username);
  const clients = await Promise.all(
    users.map(async (u) => {
      const c = mqtt.connect(config.mqtt.url, {
        username: u.username,
        password: u.password,
        protocolVersion: 5,
        clean: true,
        reconnectPeriod: 0,
      });
      await new Promise<void>((resolve, reject) => {
        c.once('connect', () => resolve());
        c.once('error', reject);
      });
      sent.set(u.username, []);
      return { c, user: u.username };
    }),
  );
  const t0 = performance.now();
  let published = 0;
  while (performance.now() - t0 < DURATION_MS) {
    const due = Math.floor(((performance.now() - t0) * FRESH_RATE) / 1000);
    while (published < due) {
      const { c, user } = clients[published % clients.length] as (typeof clients)[number];
      const ev = {
        eventId: randomUUID(),
        userId: user,
        itemId: `it-${published % ITEMS}`,
        type: TYPES[published % TYPES.length],
        ts: Date.now(),
      };
      (sent.get(user) as number[]).push(performance.now());
      c.publish(`${config.mqtt.topicPrefix}/${user}`, JSON.stringify(ev), { qos: 1 });
      published++;
    }
    await sleep(2);
  }
  await sleep(3000);
  await Promise.all(clients.map(({ c }) => c.endAsync()));
  await changes.stop();
  sub.disconnect();
  reader.disconnect();
  await stopProcess(features);
  await stopProcess(bridge);
  await discardMqttSession({
    url: config.mqtt.bridgeUrl,
    username: config.mqtt.username,
    password: config.mqtt.password,
    clientId: env.RECSYS_MQTT_CLIENT_ID as string,
  }).catch(() => undefined);
  const steady = latencies.filter((l) => l.at - t0 >= WARMUP_MS).map((l) => l.ms);
  return { rate: FRESH_RATE, published, fresh: latencies.length, latencyMs: percentiles(steady) };
}

async function main(): Promise<void> {
  const redis = benchRedis(config.redis.url, 'bench-stream');
  const catalog = new CatalogStore(redis, { cacheTtlMs: 0, cacheSize: 0 });
  await catalog.upsert(
    Array.from({ length: ITEMS }, (_, i) => ({
      itemId: `it-${i}`,
      categoryL1: `cat${i % 20}`,
      categoryL2: null,
      price: 10 + (i % 90),
      isAvailable: true,
      createdAt: Date.now(),
    })),
  );
  let t = performance.now();
  const total = await fill();
  const fillSec = (performance.now() - t) / 1000;
  console.log(`filled ${total} events in ${fillSec.toFixed(1)} s`);
  const baselineRate = await baseline(total);
  console.log(`baseline (decode only): ${baselineRate} events/s`);

  const memBefore = await usedMemoryBytes(redis);
  const features = await startRole('features', await freePort());
  // CPU the role spends per event: what one core carries, even when other work shares the
  // machine and slows the events/s (the shared host ran at load averages of 15-28).
  const cpu0 = await treeCpu(features.pid as number);
  const redisCpu0 = await redisCpuSec(redis);
  t = performance.now();
  const { firstMs, lastMs } = await waitCommitted(
    config.consumer.groups.features,
    config.kafka.topics.events,
    total,
  );
  const cpuUsPerEvent = Math.round(
    (((await treeCpu(features.pid as number)) - cpu0) * 1e6) / total,
  );
  // Redis's CPU per event: where the feature script and the co-visit writes cost.
  const redisUsPerEvent = Math.round((((await redisCpuSec(redis)) - redisCpu0) * 1e6) / total);
  await stopProcess(features);
  const memAfter = await usedMemoryBytes(redis);
  const throughput = Math.round((total * 1000) / (lastMs - firstMs));
  const bytesPerUser = Math.round((memAfter - memBefore) / USERS);
  // The delta also holds what is not per user (trending sets, Lua, buffers); MEMORY USAGE of
  // sampled user hashes gives the per-user part alone.
  const sample = Array.from({ length: 1000 }, (_, i) =>
    userFeaturesKey(`b${id}-${Math.floor((i * USERS) / 1000)}`),
  );
  const sizes = await Promise.all(sample.map((k) => memoryUsageBytes(redis, k)));
  const userHashBytes = Math.round(sizes.reduce((a, b) => a + b, 0) / sample.length);
  // The user's eventId window (the idempotency of the feature script), sampled alike.
  const windows = await Promise.all(
    sample.map((_, i) =>
      memoryUsageBytes(redis, userEventIdsKey(`b${id}-${Math.floor((i * USERS) / 1000)}`)),
    ),
  );
  const eventIdWindowBytes = Math.round(windows.reduce((a, b) => a + b, 0) / sample.length);
  console.log(
    `features: ${throughput} events/s (${((lastMs - t) / 1000).toFixed(1)} s in all; ` +
      `${cpuUsPerEvent} µs of the role's CPU and ${redisUsPerEvent} µs of Redis's per event); ` +
      `${bytesPerUser} bytes/user ` +
      `(MEMORY USAGE: features hash ${userHashBytes}, eventId window ${eventIdWindowBytes})`,
  );

  const fresh = await freshness();
  console.log(
    `freshness at ${FRESH_RATE}/s: p50 ${fresh.latencyMs.p50.toFixed(1)} ms, p99 ${fresh.latencyMs.p99.toFixed(1)} ms (${fresh.latencyMs.samples} events)`,
  );

  // Clean up the bench users' features and the topics.
  // Key by key: on a cluster one UNLINK may not span slots.
  await scanKeys(redis, `{u:b${id}-*`, 5000, async (keys) => {
    await Promise.all(keys.map((k) => redis.unlink(k)));
  });
  const admin = kafkaClient().admin();
  await admin.connect();
  await admin.deleteTopics({ topics: Object.values(config.kafka.topics) }).catch(() => undefined);
  await admin.disconnect();
  redis.disconnect();

  const result = {
    bench: 'stream',
    at: new Date().toISOString(),
    machine: { cpus: cpus().length, loadavg: loadavg() },
    settings: {
      users: USERS,
      eventsPerUser: PER_USER,
      items: ITEMS,
      consumer: config.consumer,
      features: config.features,
    },
    fill: { events: total, seconds: fillSec },
    baselineDecodeOnlyEventsPerSec: baselineRate,
    features: {
      eventsPerSec: throughput,
      cpuUsPerEvent,
      redisUsPerEvent,
      ratioToBaseline: Number((throughput / baselineRate).toFixed(3)),
      redisBytes: memAfter - memBefore,
      bytesPerUser,
      userHashBytes,
      eventIdWindowBytes,
      gibPerMillionUsers: Number(((bytesPerUser * 1e6) / 2 ** 30).toFixed(3)),
    },
    freshness: fresh,
    targets: { eventsPerSec: 20_000, freshnessP99Ms: 50, gibPerMillionUsers: 0.4 },
  };
  await mkdir(join(root, 'bench/results'), { recursive: true });
  const file = join(root, 'bench/results', `stream-${result.at.replace(/[:.]/g, '-')}.json`);
  await writeFile(file, JSON.stringify(result, null, 2) + '\n');
  console.log(`\n${file}`);
  console.log(
    `feature consumer: ${throughput} events/s (baseline decode-only ${baselineRate}/s, ratio ${result.features.ratioToBaseline}) | ` +
      `Redis ${bytesPerUser} B/user = ${result.features.gibPerMillionUsers} GiB per million | ` +
      `freshness @${FRESH_RATE}/s p50 ${fresh.latencyMs.p50.toFixed(1)} ms p99 ${fresh.latencyMs.p99.toFixed(1)} ms`,
  );
}

await main();
process.exit(0);
