/**
 * What the indexer tests share: a fixture with unique topics, schema subjects, consumer groups
 * and data stream namespace (so runs never see each other's data), an Avro producer for it, and
 * clean-up of all of it; polling helpers for Elasticsearch counts and the indexer's metrics.
 */
import type { Registry } from 'prom-client';
import type { Producer } from 'kafkajs';
import { loadConfig, type Config } from '../../../core/config.js';
import { createLogger } from '../../../core/log.js';
import { createEncoder, registerSchema, type Encoder } from '../../../schemas/registry.js';
import { subjectsFor } from '../../../schemas/subjects.js';
import { EVENT_TYPES, type ServedFeed, type UserEvent } from '../../../schemas/types.js';
import { createElastic, type ElasticClient } from '../../../stream/elastic.js';
import { dataStreamName, type StreamName } from '../../../stream/indexer-docs.js';
import { createKafka, createProducer, ensureTopics } from '../../../stream/kafka.js';
import { config as baseConfig, uniq } from '../harness.js';
import { deleteTopics } from '../ingest/bridge-process.js';

/** The indexer's own logs stay out of the test output unless asked for. */
export const quiet = createLogger(process.env.RECSYS_TEST_LOG_LEVEL ?? 'fatal', 'test-indexer');

const USERS = 40;

/** Polls `probe` until `done` holds or time runs out; returns the last value either way. */
export async function waitFor<T>(
  probe: () => Promise<T>,
  done: (v: T) => boolean,
  timeoutMs: number,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (done(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

const statusOf = (err: unknown): number | undefined =>
  (err as { meta?: { statusCode?: number } }).meta?.statusCode;

/** Documents in `index` (after a refresh) matching `query`; 0 while it does not exist. */
export async function count(es: ElasticClient, index: string, query?: object): Promise<number> {
  try {
    await es.indices.refresh({ index });
    return (await es.count({ index, ...(query ? { query } : {}) })).count;
  } catch (err) {
    if (statusOf(err) === 404) return 0;
    throw err;
  }
}

/** The value of `recsys_indexer_docs_total` for one stream and outcome. */
export async function docsMetric(
  registry: Registry,
  stream: StreamName,
  outcome: string,
): Promise<number> {
  const metric = registry.getSingleMetric('recsys_indexer_docs_total');
  if (!metric) return 0;
  const { values } = await metric.get();
  return values
    .filter((v) => v.labels.stream === stream && v.labels.outcome === outcome)
    .reduce((n, v) => n + v.value, 0);
}

/**
 * Removes what a test wrote to a data stream. A full Elasticsearch deletes data streams; the
 * integ-test distribution has no data stream API, so: roll over, delete the old backing
 * indices, close the new empty write index (a closed index holds no heap).
 */
export async function dropDataStream(es: ElasticClient, name: string): Promise<void> {
  try {
    await es.indices.deleteDataStream({ name });
    return;
  } catch (err) {
    if (statusOf(err) === 404 && (await count(es, name)) === 0) return;
  }
  try {
    const { new_index: fresh } = await es.indices.rollover({ alias: name });
    const backing = await es.cat.indices({
      index: `.ds-${name}-*`,
      format: 'json',
      h: 'index',
      expand_wildcards: 'all',
    });
    for (const { index } of backing) {
      if (index && index !== fresh) await es.indices.delete({ index });
    }
    await es.indices.close({ index: fresh });
  } catch {
    // Nothing there: the stream was never created.
  }
}

/** `n` distinct events of `USERS` users, every type, some with context, session and value. */
export function makeEvents(id: string, n: number, from = 0): UserEvent[] {
  const now = Date.now();
  return Array.from({ length: n }, (_, k) => {
    const i = from + k;
    const type = EVENT_TYPES[i % EVENT_TYPES.length] as UserEvent['type'];
    return {
      eventId: crypto.randomUUID(),
      userId: `u${i % USERS}-${id}`,
      sessionId: i % 2 === 0 ? `s${i % 7}` : null,
      itemId: `item-${i % 97}`,
      type,
      ts: now - i * 10,
      context:
        i % 3 === 0 ? { page: 'home', position: i % 10, device: i % 2 ? 'ios' : 'web' } : null,
      value: type === 'purchase' ? 10 + (i % 5) : null,
      receivedAt: now - i * 10 + 5,
      source: i % 2 ? 'mqtt' : 'http',
    };
  });
}

/** `n` served feeds of ten items each; latency 1..50 ms. */
export function makeFeeds(id: string, n: number): ServedFeed[] {
  const now = Date.now();
  return Array.from({ length: n }, (_, i) => ({
    requestId: `req-${id}-${i}`,
    userId: `u${i % USERS}-${id}`,
    ts: now - i * 100,
    items: Array.from({ length: 10 }, (_, k) => ({
      itemId: `item-${(i + k) % 97}`,
      score: 1 - k / 10,
      source: k % 2 ? 'batch' : 'trending',
    })),
    modelVersion: 'v1',
    latencyMs: 1 + (i % 50),
  }));
}

/**
 * Unique topics (3 partitions), namespace and groups for one test file, with an Avro producer.
 * `configFor(group)` is the indexer's config; `cleanup()` removes topics, subjects, groups and
 * data streams.
 */
export class IndexerFixture {
  readonly id = uniq('idx');
  readonly namespace = this.id.replaceAll('-', '_');
  readonly es = createElastic(baseConfig.elasticsearch);
  readonly streams: Record<StreamName, string>;
  readonly config: Readonly<Config>;
  readonly #groups = new Set<string>();
  readonly #kafka;
  readonly #producer: Producer;
  #events: Encoder<UserEvent> | null = null;
  #served: Encoder<ServedFeed> | null = null;
  /** Whether setup reached the services: without them, clean-up would only wait on retries. */
  #touched = false;

  constructor(overrides: Record<string, string> = {}) {
    this.config = this.configFor('g1', overrides);
    this.streams = {
      events: dataStreamName('events', this.namespace),
      served: dataStreamName('served', this.namespace),
      dlq: dataStreamName('dlq', this.namespace),
    };
    this.#kafka = createKafka(this.config.kafka, quiet, 'test');
    this.#producer = createProducer(this.#kafka);
  }

  get topics(): Config['kafka']['topics'] {
    return this.config.kafka.topics;
  }

  /** The indexer's config with its own consumer group `<id>-<group>`. */
  configFor(group: string, overrides: Record<string, string> = {}): Readonly<Config> {
    this.#groups.add(`${this.id}-${group}`);
    return loadConfig({
      ...process.env,
      RECSYS_TOPIC_EVENTS: `${this.id}.events`,
      RECSYS_TOPIC_SERVED: `${this.id}.served`,
      RECSYS_TOPIC_DLQ: `${this.id}.dlq`,
      RECSYS_TOPIC_ITEMS: `${this.id}.items`,
      RECSYS_TOPIC_PARTITIONS: '3',
      RECSYS_ES_NAMESPACE: this.namespace,
      RECSYS_GROUP_INDEXER: `${this.id}-${group}`,
      RECSYS_CONSUMER_COMMIT_INTERVAL_MS: '200',
      ...overrides,
    });
  }

  /** Creates the topics, registers the event and feed schemas, connects the producer. */
  async setup(): Promise<void> {
    await ensureTopics(this.#kafka, this.config.kafka, quiet);
    this.#touched = true;
    const subjects = subjectsFor(this.topics);
    const subject = (name: string) => subjects.find((s) => s.name === name) as (typeof subjects)[0];
    const url = this.config.registry.url;
    const ev = subject('UserEvent');
    this.#events = createEncoder<UserEvent>(await registerSchema(url, ev), ev.schema);
    const sf = subject('ServedFeed');
    this.#served = createEncoder<ServedFeed>(await registerSchema(url, sf), sf.schema);
    await this.#producer.connect();
  }

  encodeEvent(e: UserEvent): Buffer {
    return (this.#events as Encoder<UserEvent>).encode(e);
  }

  async send(topic: string, messages: Array<{ key: string; value: Buffer }>): Promise<void> {
    for (let i = 0; i < messages.length; i += 500) {
      await this.#producer.send({ topic, acks: -1, messages: messages.slice(i, i + 500) });
    }
  }

  /** Writes `events` to the events topic (key = userId); returns the bytes of each. */
  async sendEvents(events: UserEvent[]): Promise<Buffer[]> {
    const values = events.map((e) => this.encodeEvent(e));
    await this.send(
      this.topics.events,
      events.map((e, i) => ({ key: e.userId, value: values[i] as Buffer })),
    );
    return values;
  }

  async sendFeeds(feeds: ServedFeed[]): Promise<void> {
    const enc = this.#served as Encoder<ServedFeed>;
    await this.send(
      this.topics.served,
      feeds.map((f) => ({ key: f.userId, value: enc.encode(f) })),
    );
  }

  async cleanup(): Promise<void> {
    await this.#producer.disconnect().catch(() => undefined);
    if (!this.#touched) {
      await this.es.close();
      return;
    }
    const admin = this.#kafka.admin();
    await admin.connect().catch(() => undefined);
    await admin.deleteGroups([...this.#groups]).catch(() => undefined);
    await admin.disconnect().catch(() => undefined);
    await deleteTopics(Object.values(this.topics)).catch(() => undefined);
    for (const topic of Object.values(this.topics)) {
      const subject = `${this.config.registry.url}/subjects/${encodeURIComponent(`${topic}-value`)}`;
      for (const url of [subject, `${subject}?permanent=true`]) {
        await fetch(url, { method: 'DELETE' }).catch(() => undefined);
      }
    }
    for (const name of Object.values(this.streams)) await dropDataStream(this.es, name);
    await this.es.close();
  }
}
