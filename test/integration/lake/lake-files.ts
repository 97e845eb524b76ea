/**
 * What the lake tests share: events spread over several hours (with late ones), a producer that
 * writes them as the bridge does (Avro, key = userId) with foreign records mixed in, committed
 * offsets, and the lake read back with hyparquet, a Parquet reader independent of the writer.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import kafkajs from 'kafkajs';
import { sleep } from '../../../core/retry.js';
import {
  createEncoder,
  registerSchema,
  subjectsFor,
  EVENT_TYPES,
  type UserEvent,
} from '../../../schemas/index.js';
import { config, testKafka } from '../harness.js';

export const HOUR_MS = 3_600_000;

export function kafkaClient(): kafkajs.Kafka {
  return testKafka('lake');
}

/**
 * `n` distinct events over about four hours ending an hour ago, in time order except every
 * 20th, which is up to 80 minutes late (so several hours' files are open at once).
 */
export function makeEvents(prefix: string, n: number, users = 60): UserEvent[] {
  const start = (Math.floor(Date.now() / HOUR_MS) - 5) * HOUR_MS + 17 * 60_000;
  const out: UserEvent[] = [];
  for (let i = 0; i < n; i++) {
    let ts = start + Math.floor((i * 4 * HOUR_MS) / n);
    if (i % 20 === 7) ts -= 20 * 60_000 + (i % 7) * 10 * 60_000;
    out.push({
      eventId: crypto.randomUUID(),
      userId: `${prefix}-u${i % users}`,
      sessionId: i % 3 === 0 ? null : `${prefix}-s${Math.floor(i / 50)}`,
      itemId: `${prefix}-i${(i * 7) % 500}`,
      type: EVENT_TYPES[i % EVENT_TYPES.length] as UserEvent['type'],
      ts,
      context:
        i % 4 === 0
          ? null
          : { page: i % 8 === 1 ? null : 'home', position: i % 50, device: i % 2 ? 'ios' : null },
      value: i % 5 === 0 ? (i % 997) / 7 : null,
      receivedAt: ts + 5 + (i % 100),
      source: i % 2 ? 'mqtt' : 'http',
    });
  }
  return out;
}

/** Records that are not events: a value no decoder accepts. */
export const GARBAGE = Buffer.from('not a Confluent Avro frame');

/**
 * Writes `events` to `topic` (Avro, key = userId) in batches of `batch`, paced to `perSecond`
 * when given; `foreign` records (garbage bytes, key `garbage`) are sent after the batches whose
 * index they name.
 */
export async function produce(
  topic: string,
  events: readonly UserEvent[],
  opts: { perSecond?: number; batch?: number; garbageAfter?: number[] } = {},
): Promise<void> {
  const subject = subjectsFor({ ...config.kafka.topics, events: topic }).find(
    (s) => s.name === 'UserEvent',
  );
  assert.ok(subject);
  const encoder = createEncoder<UserEvent>(
    await registerSchema(config.registry.url, subject),
    subject.schema,
  );
  const producer = kafkaClient().producer({
    createPartitioner: kafkajs.Partitioners.DefaultPartitioner,
    idempotent: true,
    maxInFlightRequests: 1,
  });
  await producer.connect();
  try {
    const batch = opts.batch ?? 500;
    const t0 = Date.now();
    for (let i = 0, b = 0; i < events.length; i += batch, b++) {
      await producer.send({
        topic,
        acks: -1,
        messages: events
          .slice(i, i + batch)
          .map((e) => ({ key: e.userId, value: encoder.encode(e) })),
      });
      if (opts.garbageAfter?.includes(b)) {
        await producer.send({ topic, acks: -1, messages: [{ key: 'garbage', value: GARBAGE }] });
      }
      if (opts.perSecond) {
        const due = t0 + ((i + batch) / opts.perSecond) * 1000;
        if (due > Date.now()) await sleep(due - Date.now());
      }
    }
  } finally {
    await producer.disconnect();
  }
}

/** The partition kafkajs' (Java-compatible) partitioner gives a key. */
export async function partitionOfKey(admin: kafkajs.Admin, topic: string) {
  const meta = await admin.fetchTopicMetadata({ topics: [topic] });
  const partitioner = kafkajs.Partitioners.DefaultPartitioner();
  const partitionMetadata = meta.topics[0]?.partitions ?? [];
  return (key: string): number =>
    partitioner({ topic, partitionMetadata, message: { key, value: null } });
}

/** High watermark of each partition of `topic`. */
export async function ends(admin: kafkajs.Admin, topic: string): Promise<Map<number, bigint>> {
  const offsets = await admin.fetchTopicOffsets(topic);
  return new Map(offsets.map((o) => [o.partition, BigInt(o.high)]));
}

/** What `group` committed on each partition of `topic` (-1 when nothing). */
export async function committed(
  admin: kafkajs.Admin,
  group: string,
  topic: string,
): Promise<Map<number, bigint>> {
  const [res] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  return new Map((res?.partitions ?? []).map((p) => [p.partition, BigInt(p.offset)]));
}

/** Resolves once `group` committed the end of every partition of `topic`. */
export async function waitCommitted(
  admin: kafkajs.Admin,
  group: string,
  topic: string,
  timeoutMs: number,
  alive: () => string | null = () => null,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const [high, done] = await Promise.all([ends(admin, topic), committed(admin, group, topic)]);
    const behind = [...high].filter(([p, h]) => (done.get(p) ?? -1n) < h);
    if (behind.length === 0) return;
    last = behind.map(([p, h]) => `${p}: ${done.get(p)} of ${h}`).join(', ');
    const dead = alive();
    assert.ok(dead === null, dead ?? '');
    assert.ok(
      Date.now() < deadline,
      `group ${group} not caught up after ${timeoutMs} ms (${last})`,
    );
    await sleep(200);
  }
}

export interface LakeFileInfo {
  /** Path relative to the lake root. */
  path: string;
  topic: string;
  date: string;
  hour: string;
  partition: number;
  first: bigint;
  last: bigint;
}

const FILE_PATH =
  /^topic=([^/]+)\/date=(\d{4}-\d{2}-\d{2})\/hour=(\d{2})\/(.+)-(\d+)-(\d+)-(\d+)\.parquet$/;

/** Every Parquet file under `dir` (temp files excluded); fails on any other file name. */
export async function lakeFiles(dir: string): Promise<LakeFileInfo[]> {
  const out: LakeFileInfo[] = [];
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  for (const e of entries) {
    if (!e.isFile() || !e.name.endsWith('.parquet')) continue;
    const path = join(e.parentPath, e.name).slice(dir.length + 1);
    const m = FILE_PATH.exec(path);
    assert.ok(m, `unexpected lake path ${path}`);
    assert.equal(m[4], m[1], `${path}: file named for another topic`);
    out.push({
      path,
      topic: m[1] as string,
      date: m[2] as string,
      hour: m[3] as string,
      partition: Number(m[5]),
      first: BigInt(m[6] as string),
      last: BigInt(m[7] as string),
    });
  }
  return out.sort((a, b) => a.path.localeCompare(b.path));
}

export type LakeRow = Record<string, unknown> & { file: LakeFileInfo };

/** Every row of every file, with the file it came from. */
export async function readLake(dir: string): Promise<{ files: LakeFileInfo[]; rows: LakeRow[] }> {
  const files = await lakeFiles(dir);
  const rows: LakeRow[] = [];
  for (const file of files) {
    const data = await parquetReadObjects({
      file: await asyncBufferFromFile(join(dir, file.path)),
      compressors,
    });
    for (const r of data) rows.push({ ...r, file });
  }
  return { files, rows };
}

/** The row the lake must hold for `e`. */
export function expectedRow(e: UserEvent): Record<string, unknown> {
  return {
    eventId: e.eventId,
    userId: e.userId,
    sessionId: e.sessionId,
    itemId: e.itemId,
    type: e.type,
    ts: new Date(e.ts),
    context_page: e.context?.page ?? null,
    context_position: e.context?.position ?? null,
    context_device: e.context?.device ?? null,
    value: e.value,
    receivedAt: new Date(e.receivedAt),
    source: e.source,
  };
}

/** One sample of a Prometheus text exposition, labels matched exactly (none: the bare name). */
export function sample(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  assert.ok(line, `no sample ${name}{${labels}} in:\n${text}`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}
