/**
 * What the stores hold at the end of a fault-matrix run, read from outside the product:
 * - Kafka: every record of the events topic (eventId from the `event-id` header, partition,
 *   offset), the DLQ records (Avro, decoded with the registry's writer schema) and the last
 *   value of every catalog item, read by kafkajs up to the high watermarks;
 * - Redis: each user's applied count (`n` of the features hash) and each item's price;
 * - Elasticsearch: the `_id` (= eventId) of every document of the run's events data stream;
 * - the lake: eventId, partition and offset of every Parquet row, through DuckDB.
 * And {@link waitQuiet}: until every consumer group committed everything in its topics.
 */
import kafkajs from 'kafkajs';
import { openPipeline, type RedisClient } from '../../store/redis.js';
import { createLogger, sleep, type Config } from '../../core/index.js';
import { createDecoder, type DlqRecord } from '../../schemas/index.js';
import { ITEM_FIELDS, itemKey, USER_FIELDS, userFeaturesKey } from '../../store/keys.js';
import { createKafka } from '../../stream/kafka.js';
import { elasticAuthHeaders } from '../../stream/elastic.js';
import { dataStreamName } from '../../stream/indexer-docs.js';
import { lakeGlob } from '../../stream/lake-layout.js';
import { openBatchDb, sqlString } from '../../batch/duck.js';

const QUIET = createLogger('silent', 'chaos-observe');

function kafkaOf(config: Readonly<Config>, role: string): kafkajs.Kafka {
  return createKafka(config.kafka, QUIET, role, { logLevel: kafkajs.logLevel.NOTHING });
}

/** Consumer groups and the topics each reads. */
export type GroupTopics = Record<string, string[]>;

/**
 * Waits until every group has committed up to the end of each of its topics, twice in a row a
 * couple of seconds apart (a role that rolls files or flushes each second catches up in
 * between). Returns what is still uncommitted per group when the time runs out (empty: quiet).
 */
export async function waitQuiet(
  config: Readonly<Config>,
  groups: GroupTopics,
  timeoutMs: number,
): Promise<Record<string, number>> {
  const admin = kafkaOf(config, 'chaos-quiet').admin();
  await admin.connect();
  const deadline = Date.now() + timeoutMs;
  let quietRounds = 0;
  try {
    for (;;) {
      const behind = await lagOf(admin, groups);
      const total = Object.values(behind).reduce((a, b) => a + b, 0);
      quietRounds = total === 0 ? quietRounds + 1 : 0;
      if (quietRounds >= 2 || Date.now() > deadline) return total === 0 ? {} : behind;
      await sleep(2000);
    }
  } finally {
    await admin.disconnect();
  }
}

/** Records each group has not committed yet, summed over its topics' partitions. */
export async function lagOf(
  admin: kafkajs.Admin,
  groups: GroupTopics,
): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const ends = new Map<string, Map<number, number>>();
  for (const topics of Object.values(groups)) {
    for (const t of topics) {
      if (ends.has(t)) continue;
      const offsets = await admin.fetchTopicOffsets(t);
      ends.set(t, new Map(offsets.map((o) => [o.partition, Number(o.high)])));
    }
  }
  for (const [group, topics] of Object.entries(groups)) {
    let behind = 0;
    const committed = await admin.fetchOffsets({ groupId: group, topics });
    for (const t of committed) {
      const end = ends.get(t.topic) ?? new Map<number, number>();
      for (const [partition, high] of end) {
        const c = Number(t.partitions.find((p) => p.partition === partition)?.offset ?? -1);
        behind += Math.max(0, high - Math.max(0, c));
      }
    }
    out[group] = behind;
  }
  return out;
}

/** Every record of `topic` up to its current high watermarks. */
export async function readTopic(
  config: Readonly<Config>,
  topic: string,
  onRecord: (m: kafkajs.KafkaMessage, partition: number) => Promise<void> | void,
): Promise<number> {
  const kafka = kafkaOf(config, 'chaos-read');
  const admin = kafka.admin();
  await admin.connect();
  const ends = new Map(
    (await admin.fetchTopicOffsets(topic)).map((o) => [o.partition, BigInt(o.high)]),
  );
  await admin.disconnect();
  const todo = new Set([...ends].filter(([, high]) => high > 0n).map(([p]) => p));
  if (todo.size === 0) return 0;
  const groupId = `chaos-read-${topic}-${Date.now().toString(36)}`;
  const consumer = kafka.consumer({
    groupId,
    maxBytes: 16 * 2 ** 20,
  });
  let count = 0;
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    const done = new Promise<void>((resolve, reject) => {
      consumer
        .run({
          autoCommit: false,
          eachBatch: async ({ batch }) => {
            const high = ends.get(batch.partition) ?? 0n;
            for (const m of batch.messages) {
              if (BigInt(m.offset) >= high) break;
              await onRecord(m, batch.partition);
              count++;
              if (BigInt(m.offset) === high - 1n) todo.delete(batch.partition);
            }
            if (todo.size === 0) resolve();
          },
        })
        .catch(reject);
    });
    await done;
  } finally {
    await consumer.disconnect();
    const cleanup = kafka.admin();
    await cleanup.connect();
    await cleanup.deleteGroups([groupId]).catch(() => undefined);
    await cleanup.disconnect();
  }
  return count;
}

export interface KafkaCopy {
  partition: number;
  offset: string;
  userId: string;
}

/** Records of the events topic by eventId (the `event-id` header the bridge writes). */
export async function readEvents(config: Readonly<Config>): Promise<Map<string, KafkaCopy[]>> {
  const out = new Map<string, KafkaCopy[]>();
  await readTopic(config, config.kafka.topics.events, (m, partition) => {
    const id = m.headers?.['event-id']?.toString();
    if (!id) return;
    const copies = out.get(id) ?? [];
    copies.push({ partition, offset: m.offset, userId: m.key?.toString() ?? '' });
    out.set(id, copies);
  });
  return out;
}

/** DLQ records: reason and original bytes (as text), in topic order. */
export async function readDlq(
  config: Readonly<Config>,
): Promise<{ reason: string; original: string }[]> {
  const decoder = createDecoder<DlqRecord>(config.registry.url);
  const out: { reason: string; original: string }[] = [];
  await readTopic(config, config.kafka.topics.dlq, async (m) => {
    if (!m.value) return;
    try {
      await decoder.prepare([m.value]);
      const r = decoder.decode(m.value);
      out.push({ reason: r.reason, original: Buffer.from(r.original).toString('utf8') });
    } catch {
      out.push({ reason: '(undecodable)', original: m.value.toString('utf8') });
    }
  });
  return out;
}

/** The last price of every item in the items topic (a record without a value deletes). */
export async function readCatalogTopic(config: Readonly<Config>): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  await readTopic(config, config.kafka.topics.items, (m) => {
    const key = m.key?.toString();
    if (!key) return;
    if (!m.value || m.value.length === 0) out.delete(key);
    else out.set(key, Number((JSON.parse(m.value.toString()) as { price: number }).price));
  });
  return out;
}

/** Each user's applied count (`n`), 0 for a user without features. */
export async function readApplied(
  redis: RedisClient,
  users: string[],
): Promise<Map<string, number>> {
  const p = openPipeline(redis);
  for (const u of users) p.hget(userFeaturesKey(u), USER_FIELDS.total);
  const res = (await p.exec()) ?? [];
  return new Map(users.map((u, i) => [u, Number(res[i]?.[1] ?? 0)]));
}

/** Each item's price in Redis (NaN for a missing item). */
export async function readPrices(
  redis: RedisClient,
  items: string[],
): Promise<Map<string, number>> {
  const p = openPipeline(redis);
  for (const i of items) p.hget(itemKey(i), ITEM_FIELDS.price);
  const res = (await p.exec()) ?? [];
  return new Map(items.map((item, i) => [item, Number(res[i]?.[1] ?? NaN)]));
}

/** Documents of the run's events data stream, counted by `_id` (the eventId). */
export async function readIndexed(config: Readonly<Config>): Promise<Map<string, number>> {
  const es = config.elasticsearch;
  const headers = { ...elasticAuthHeaders(es), 'content-type': 'application/json' };
  const index = dataStreamName('events', config.indexer.namespace);
  const call = async (path: string, body?: unknown): Promise<Record<string, unknown>> => {
    const res = await fetch(`${es.url}${path}`, {
      method: 'POST',
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(60_000),
    });
    const json = (await res.json()) as Record<string, unknown>;
    if (!res.ok) throw new Error(`elasticsearch ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  const out = new Map<string, number>();
  const exists = await fetch(`${es.url}/_data_stream/${index}`, { headers });
  await exists.body?.cancel();
  if (exists.status === 404) return out;
  await call(`/${index}/_refresh`);
  const pit = (await call(`/${index}/_pit?keep_alive=2m`)).id as string;
  let after: unknown[] | undefined;
  for (;;) {
    const page = await call('/_search', {
      size: 10_000,
      _source: false,
      pit: { id: pit, keep_alive: '2m' },
      sort: [{ _shard_doc: 'asc' }],
      ...(after ? { search_after: after } : {}),
    });
    const hits = (page.hits as { hits: { _id: string; sort: unknown[] }[] }).hits;
    if (hits.length === 0) break;
    for (const h of hits) out.set(h._id, (out.get(h._id) ?? 0) + 1);
    after = hits[hits.length - 1]?.sort;
  }
  await fetch(`${es.url}/_pit`, {
    method: 'DELETE',
    headers,
    body: JSON.stringify({ id: pit }),
  }).catch(() => undefined);
  return out;
}

/** Lake rows of the events topic: per eventId its `partition:offset`s. */
export async function readLake(config: Readonly<Config>): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  const db = await openBatchDb({ memoryLimit: '512MB', threads: 1 });
  try {
    const glob = lakeGlob(config.lake.dir, config.kafka.topics.events);
    let rows: unknown[][];
    try {
      const r = await db.conn.runAndReadAll(
        `SELECT eventId, kafka_partition, kafka_offset FROM read_parquet(${sqlString(glob)}, hive_partitioning = true)`,
      );
      rows = r.getRowsJS() as unknown[][];
    } catch (err) {
      // No file yet is an empty lake, not an error.
      if (/No files found/i.test((err as Error).message)) return out;
      throw err;
    }
    for (const [eventId, partition, offset] of rows) {
      const key = `${String(partition)}:${String(offset)}`;
      const list = out.get(String(eventId)) ?? [];
      list.push(key);
      out.set(String(eventId), list);
    }
  } finally {
    db.close();
  }
  return out;
}
