/**
 * What the stream-consumer tests share: a stream of valid Avro events written straight to a
 * topic (as the bridge would), an isolated environment per test (topics, groups, Redis users,
 * ES namespace), and waiting for a consumer group to commit everything.
 */
import kafkajs from 'kafkajs';
import { loadConfig } from '../../../core/config.js';
import { ensureTopics } from '../../../stream/kafka.js';
import { createEncoder, registerSchema, subjectsFor } from '../../../schemas/index.js';
import type { EventType, UserEvent } from '../../../schemas/types.js';
import { log, testKafka, uniq } from '../harness.js';
import { sleep } from '../../../core/retry.js';

export const TYPES: EventType[] = [
  'view',
  'view',
  'view',
  'click',
  'click',
  'add_to_cart',
  'like',
  'purchase',
];

/** `users` users with `perUser` events each, interleaved by time, on `items` items. */
export function makeEvents(
  prefix: string,
  users: number,
  perUser: number,
  items = 200,
): UserEvent[] {
  const now = Date.now();
  const out: UserEvent[] = [];
  for (let k = 0; k < perUser; k++) {
    for (let u = 0; u < users; u++) {
      const i = (u * 7 + k * 13) % items;
      out.push({
        eventId: crypto.randomUUID(),
        userId: `${prefix}-u${u}`,
        sessionId: null,
        itemId: `${prefix}-i${i}`,
        type: TYPES[(u + k) % TYPES.length] as EventType,
        ts: now - (perUser - k) * 60_000 + u,
        context: null,
        value: null,
        receivedAt: now,
        source: 'mqtt',
      });
    }
  }
  return out;
}

/** An isolated config: unique topics and consumer groups; `overrides` win. */
export function isolatedEnv(overrides: Record<string, string> = {}): Record<string, string> {
  const id = uniq('st');
  return {
    RECSYS_TOPIC_EVENTS: `${id}.events`,
    RECSYS_TOPIC_DLQ: `${id}.dlq`,
    RECSYS_TOPIC_SERVED: `${id}.served`,
    RECSYS_TOPIC_ITEMS: `${id}.items`,
    RECSYS_GROUP_FEATURES: `${id}-features`,
    RECSYS_GROUP_INDEXER: `${id}-indexer`,
    RECSYS_GROUP_LAKE: `${id}-lake`,
    RECSYS_GROUP_CATALOG: `${id}-catalog`,
    RECSYS_LOG_LEVEL: 'warn',
    ...overrides,
  };
}

export function testConfig(env: Record<string, string>) {
  return loadConfig({ ...process.env, ...env });
}

function client(): kafkajs.Kafka {
  return testKafka();
}

/**
 * Writes `events` to the events topic of `env` as the bridge does (Avro, key = userId), in
 * batches of 1,000, optionally paced to `perSecond`.
 */
export async function produceEvents(
  env: Record<string, string>,
  events: readonly UserEvent[],
  perSecond = 0,
): Promise<void> {
  const cfg = testConfig(env);
  const kafka = client();
  await ensureTopics(kafka, cfg.kafka, log);
  const subject = subjectsFor(cfg.kafka.topics).find((s) => s.name === 'UserEvent');
  if (!subject) throw new Error('no UserEvent subject');
  const encoder = createEncoder<UserEvent>(
    await registerSchema(cfg.registry.url, subject),
    subject.schema,
  );
  const producer = kafka.producer({
    createPartitioner: kafkajs.Partitioners.DefaultPartitioner,
    idempotent: true,
    maxInFlightRequests: 1,
  });
  await producer.connect();
  try {
    const step = perSecond > 0 ? Math.max(1, Math.floor(perSecond / 20)) : 1000;
    const t0 = Date.now();
    for (let i = 0; i < events.length; i += step) {
      await producer.send({
        topic: cfg.kafka.topics.events,
        acks: -1,
        messages: events
          .slice(i, i + step)
          .map((e) => ({ key: e.userId, value: encoder.encode(e) })),
      });
      if (perSecond > 0) {
        const due = t0 + ((i + step) / perSecond) * 1000;
        if (due > Date.now()) await sleep(due - Date.now());
      }
    }
  } finally {
    await producer.disconnect();
  }
}

/** Resolves when `group` has committed the end of every partition of `topic`. */
export async function waitCommitted(
  topic: string,
  group: string,
  timeoutMs = 60_000,
): Promise<void> {
  const admin = client().admin();
  await admin.connect();
  try {
    const deadline = Date.now() + timeoutMs;
    let behind = -1;
    while (Date.now() < deadline) {
      const ends = await admin.fetchTopicOffsets(topic);
      const [committed] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
      behind = 0;
      for (const end of ends) {
        const c = committed?.partitions.find((p) => p.partition === end.partition);
        const at = c && Number(c.offset) >= 0 ? Number(c.offset) : 0;
        behind += Number(end.high) - at;
      }
      if (behind === 0) return;
      await sleep(200);
    }
    throw new Error(
      `group ${group} still ${behind} records behind on ${topic} after ${timeoutMs} ms`,
    );
  } finally {
    await admin.disconnect();
  }
}
