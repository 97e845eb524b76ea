/**
 * The lake sink end to end on real Kafka and the registry, its files read back with hyparquet
 * (independent of DuckDB, which writes them) and with DuckDB's Hive reader (what the batch jobs
 * use). Every Kafka record must be accounted for exactly once: a row in the lake, or a DLQ
 * record (garbage, impossible times). Then a redelivery (a new group from the beginning into the
 * same lake) and a SIGKILL that lands between a file's rename and its commit: the lake still
 * holds each event once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { DuckDBInstance } from '@duckdb/node-api';
import type kafkajs from 'kafkajs';
import { Registry } from 'prom-client';
import { type Config, loadConfig } from '../../../core/index.js';
import { sleep } from '../../../core/retry.js';
import type { DlqRecord, UserEvent } from '../../../schemas/types.js';
import { ensureTopics } from '../../../stream/kafka.js';
import { startLake } from '../../../stream/roles/lake.js';
import { lakeGlob } from '../../../stream/lake-layout.js';
import { AvroReader, deleteTopics, readDecoded } from '../ingest/bridge-process.js';
import { config, log, requireServices, uniq } from '../harness.js';
import {
  committed,
  ends,
  expectedRow,
  kafkaClient,
  lakeFiles,
  makeEvents,
  partitionOfKey,
  produce,
  readLake,
  sample,
  waitCommitted,
  type LakeFileInfo,
} from './lake-files.js';

const SINK = join(process.cwd(), 'dist', 'test', 'integration', 'lake', 'sink-process.js');
const topics: string[] = [];
const dirs: string[] = [];
const children: ChildProcess[] = [];

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await deleteTopics(topics).catch(() => undefined);
  for (const topic of topics) {
    const subject = `${config.registry.url}/subjects/${encodeURIComponent(`${topic}-value`)}`;
    for (const url of [subject, `${subject}?permanent=true`]) {
      await fetch(url, { method: 'DELETE' }).catch(() => undefined);
    }
  }
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

/** An isolated environment: unique topics (3 partitions), group and lake directory. */
async function isolated(overrides: Record<string, string>) {
  const id = uniq('lake');
  const dir = await mkdtemp(join(tmpdir(), 'recsys-lake-it-'));
  dirs.push(dir);
  const env: Record<string, string> = {
    RECSYS_TOPIC_EVENTS: `${id}.events`,
    RECSYS_TOPIC_DLQ: `${id}.dlq`,
    RECSYS_TOPIC_SERVED: `${id}.served`,
    RECSYS_TOPIC_ITEMS: `${id}.items`,
    RECSYS_TOPIC_PARTITIONS: '3',
    RECSYS_GROUP_LAKE: `${id}-lake`,
    RECSYS_LAKE_DIR: dir,
    RECSYS_LOG_LEVEL: 'warn',
    ...overrides,
  };
  const cfg = loadConfig({ ...process.env, ...env });
  topics.push(...Object.values(cfg.kafka.topics));
  await ensureTopics(kafkaClient(), cfg.kafka, log);
  return { env, cfg, dir, topic: cfg.kafka.topics.events };
}

/** The Kafka offsets the DLQ holds records for, by partition (from `topic/partition@offset`). */
async function dlqOffsets(cfg: Config): Promise<{ reasons: string[]; at: Map<number, bigint[]> }> {
  const records = await readDecoded<DlqRecord>(new AvroReader(), cfg.kafka.topics.dlq);
  const at = new Map<number, bigint[]>();
  for (const { value } of records) {
    const m = /^(.+)\/(\d+)@(\d+):/.exec(value.message);
    assert.ok(m && m[1] === cfg.kafka.topics.events, `DLQ message ${value.message}`);
    const p = Number(m[2]);
    const offset = BigInt(m[3] as string);
    // Each group dead-letters what it cannot use: a redelivery sends the same offsets again.
    if (!at.get(p)?.includes(offset)) at.set(p, (at.get(p) ?? []).concat(offset));
  }
  return { reasons: records.map((r) => r.value.reason), at };
}

/**
 * The lake holds exactly `events`, each once, each where it belongs; with the DLQ, every offset
 * of every partition is accounted for exactly once; roll ranges never overlap.
 */
async function verifyLake(
  admin: kafkajs.Admin,
  cfg: Config,
  dir: string,
  events: readonly UserEvent[],
): Promise<LakeFileInfo[]> {
  const topic = cfg.kafka.topics.events;
  const { files, rows } = await readLake(dir);
  const byId = new Map(events.map((e) => [e.eventId, e]));
  const partitionOf = await partitionOfKey(admin, topic);
  const seen = new Set<string>();
  const offsets = new Map<number, bigint[]>();
  for (const row of rows) {
    const { file, kafka_partition: p, kafka_offset: offset, ...fields } = row;
    const e = byId.get(fields.eventId as string);
    assert.ok(e, `row of an event never sent: ${String(fields.eventId)}`);
    assert.ok(!seen.has(e.eventId), `event ${e.eventId} twice in the lake (${file.path})`);
    seen.add(e.eventId);
    assert.deepEqual(fields, expectedRow(e));
    assert.equal(p, partitionOf(e.userId));
    assert.equal(file.partition, p);
    assert.ok(typeof offset === 'bigint' && file.first <= offset && offset <= file.last, file.path);
    const iso = new Date(e.ts).toISOString();
    assert.deepEqual(
      [file.topic, file.date, file.hour],
      [topic, iso.slice(0, 10), iso.slice(11, 13)],
    );
    offsets.set(p as number, (offsets.get(p as number) ?? []).concat(offset as bigint));
  }
  assert.equal(seen.size, events.length, `${events.length - seen.size} events missing`);

  const dlq = await dlqOffsets(cfg);
  for (const [p, high] of await ends(admin, topic)) {
    const all = (offsets.get(p) ?? []).concat(dlq.at.get(p) ?? []).sort((a, b) => (a < b ? -1 : 1));
    assert.equal(all.length, Number(high), `partition ${p}: ${all.length} records of ${high}`);
    all.forEach((o, i) =>
      assert.equal(o, BigInt(i), `partition ${p}: offset ${i} not accounted once`),
    );
    const ranges = [
      ...new Set(files.filter((f) => f.partition === p).map((f) => `${f.first}-${f.last}`)),
    ]
      .map((r) => r.split('-').map(BigInt) as [bigint, bigint])
      .sort((a, b) => (a[0] < b[0] ? -1 : 1));
    for (let i = 1; i < ranges.length; i++) {
      assert.ok(
        (ranges[i - 1] as [bigint, bigint])[1] < (ranges[i] as [bigint, bigint])[0],
        `partition ${p}: overlapping rolls`,
      );
    }
  }
  return files;
}

/** Runs the sink in this process until its group committed the whole topic. */
async function runInProcess(cfg: Config, admin: kafkajs.Admin) {
  const registry = new Registry();
  const role = startLake({ config: cfg, log, metrics: registry });
  const t0 = performance.now();
  try {
    await role.ready;
    await waitCommitted(admin, cfg.consumer.groups.lake, cfg.kafka.topics.events, 60_000);
    const report = await role.readiness();
    assert.ok(report.ok, JSON.stringify(report));
  } finally {
    await role.stop();
  }
  return { ms: performance.now() - t0, metrics: await registry.metrics() };
}

/** The sink as a child process (see sink-process.ts), its output kept for failure messages. */
function startSink(env: Record<string, string>) {
  const child = spawn(process.execPath, [SINK], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let output = '';
  const keep = (d: Buffer) => (output = (output + d.toString()).slice(-256 * 1024));
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  const alive = () => child.exitCode === null && child.signalCode === null;
  return {
    child,
    exited,
    alive,
    output: () => output,
    dead: () =>
      alive() ? null : `sink exited (${child.exitCode ?? child.signalCode}):\n${output}`,
    async waitReady(timeoutMs = 60_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!output.includes('"msg":"lake sink ready"')) {
        assert.ok(alive(), `sink exited before it was ready:\n${output}`);
        assert.ok(Date.now() < deadline, `sink not ready after ${timeoutMs} ms:\n${output}`);
        await sleep(50);
      }
    },
  };
}

async function withAdmin<T>(fn: (admin: kafkajs.Admin) => Promise<T>): Promise<T> {
  const admin = kafkaClient().admin();
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect();
  }
}

async function requireStack(t: TestContext): Promise<boolean> {
  return requireServices(t, 'kafka', 'registry');
}

describe('lake sink', () => {
  it('archives 5,000 events once by UTC hour; new groups from the beginning rewrite, not add', async (t) => {
    if (!(await requireStack(t))) return;
    await withAdmin(async (admin) => {
      // Small rolls so many files are written; the age roll only closes the tail.
      const { env, cfg, dir, topic } = await isolated({
        RECSYS_LAKE_ROLL_RECORDS: '400',
        RECSYS_LAKE_ROLL_MS: '5000',
      });
      const events = makeEvents(uniq('e'), 5000);
      // One event whose time no Parquet timestamp holds (it skipped the bridge's checks).
      const impossible = { ...makeEvents(uniq('x'), 1)[0], ts: 9e15 } as UserEvent;
      await produce(topic, events.slice(0, 2500).concat(impossible, events.slice(2500)), {
        garbageAfter: [1, 4, 7],
      });

      const first = await runInProcess(cfg, admin);
      const files = await verifyLake(admin, cfg, dir, events);
      const dlq = await dlqOffsets(cfg);
      assert.deepEqual(dlq.reasons.sort(), [
        'lake_time_out_of_range',
        'undecodable',
        'undecodable',
        'undecodable',
      ]);
      const hours = new Set(files.map((f) => `${f.date}/${f.hour}`));
      assert.ok(hours.size >= 4, `events spread over ${hours.size} hours`);
      assert.ok(files.length >= 3 * hours.size, `only ${files.length} files`);
      assert.equal(sample(first.metrics, 'recsys_lake_rows_written_total'), 5000);
      assert.equal(sample(first.metrics, 'recsys_lake_files_written_total'), files.length);
      assert.equal(sample(first.metrics, 'recsys_lake_refused_records_total'), 1);

      // The batch side's view: DuckDB's Hive reader agrees on count, uniqueness and placement.
      const db = await DuckDBInstance.create(':memory:');
      const conn = await db.connect();
      try {
        const res = await conn.runAndReadAll(
          `SELECT count(*)::INTEGER AS n, count(DISTINCT eventId)::INTEGER AS distinct_ids,
             count(*) FILTER (WHERE strftime(ts AT TIME ZONE 'UTC', '%Y-%m-%d') <> date::VARCHAR
               OR hour(ts AT TIME ZONE 'UTC') <> hour)::INTEGER AS misplaced,
             count(*) FILTER (WHERE topic <> '${topic}')::INTEGER AS other_topic,
             any_value(typeof(ts)) AS ts_type
           FROM read_parquet('${lakeGlob(dir, topic)}', hive_partitioning = true)`,
        );
        assert.deepEqual(res.getRowObjectsJson(), [
          {
            n: 5000,
            distinct_ids: 5000,
            misplaced: 0,
            other_topic: 0,
            ts_type: 'TIMESTAMP WITH TIME ZONE',
          },
        ]);
      } finally {
        conn.closeSync();
        db.closeSync();
      }

      // Redelivery: a new group reads the topic from the beginning into the same lake. It
      // removes what it will rewrite and rolls at the same offsets: same names, no duplicates.
      const again = loadConfig({ ...process.env, ...env, RECSYS_GROUP_LAKE: uniq('lake-again') });
      const second = await runInProcess(again, admin);
      const rewritten = await verifyLake(admin, again, dir, events);
      assert.deepEqual(
        rewritten.map((f) => f.path),
        files.map((f) => f.path),
      );
      assert.equal(
        sample(second.metrics, 'recsys_lake_recovered_files_total', 'action="removed"'),
        files.length,
      );
      // Another new group with another roll size: its rolls end at other offsets, so nothing
      // is overwritten by name; only the cleanup on assignment keeps rows from doubling.
      const resized = loadConfig({
        ...process.env,
        ...env,
        RECSYS_GROUP_LAKE: uniq('lake-resized'),
        RECSYS_LAKE_ROLL_RECORDS: '333',
      });
      await runInProcess(resized, admin);
      const resizedFiles = await verifyLake(admin, resized, dir, events);
      const before = new Set(files.map((f) => f.path));
      assert.deepEqual(
        resizedFiles.filter((f) => before.has(f.path)),
        [],
      );
      const bytes = sample(first.metrics, 'recsys_lake_written_bytes_total');
      t.diagnostic(
        `${files.length} files over ${hours.size} hours, ${bytes} bytes (${(bytes / 5000).toFixed(1)} B/row); ` +
          `first pass ${first.ms.toFixed(0)} ms, redelivery ${second.ms.toFixed(0)} ms (each includes ` +
          `the 5 s age roll of the tail)`,
      );
    });
  });

  it('two sinks in one group, one joining and one leaving mid-stream, write each event once', async (t) => {
    if (!(await requireStack(t))) return;
    await withAdmin(async (admin) => {
      const { cfg, dir, topic } = await isolated({
        RECSYS_LAKE_ROLL_RECORDS: '200',
        RECSYS_LAKE_ROLL_MS: '400',
        RECSYS_CONSUMER_SESSION_TIMEOUT_MS: '6000',
      });
      const events = makeEvents(uniq('r'), 9000);
      const registries = [new Registry(), new Registry()];
      const a = startLake({ config: cfg, log, metrics: registries[0] as Registry });
      await a.ready;
      const producer = produce(topic, events, { perSecond: 1500, batch: 50, garbageAfter: [40] });
      let b: ReturnType<typeof startLake> | null = null;
      try {
        await sleep(1500);
        // B joins: every partition is revoked from A and the three are split between them.
        b = startLake({ config: cfg, log, metrics: registries[1] as Registry });
        await b.ready;
        await sleep(2000);
        // A leaves: B takes its partitions over from what A committed on the way out.
        await a.stop();
        await producer;
        await waitCommitted(admin, cfg.consumer.groups.lake, topic, 60_000);
      } finally {
        await a.stop();
        await b?.stop();
      }
      await verifyLake(admin, cfg, dir, events);
      const [left, joined] = await Promise.all(
        registries.map(async (r) => sample(await r.metrics(), 'recsys_lake_rows_written_total')),
      );
      assert.ok(left && joined, `rows written by each sink: ${left}, ${joined}`);
      t.diagnostic(`rows written by the sink that left ${left}, by the one that joined ${joined}`);
    });
  });

  it('a SIGKILL between a rename and its commit leaves no duplicate after the restart', async (t) => {
    if (!(await requireStack(t))) return;
    await withAdmin(async (admin) => {
      const { env, cfg, dir, topic } = await isolated({
        RECSYS_LAKE_ROLL_RECORDS: '150',
        RECSYS_LAKE_ROLL_MS: '300',
        RECSYS_CONSUMER_SESSION_TIMEOUT_MS: '6000',
        RECSYS_LOG_LEVEL: 'info',
      });
      const group = cfg.consumer.groups.lake;
      const events = makeEvents(uniq('k'), 12_000);
      let sink = startSink(env);
      await sink.waitReady();
      let producing = true;
      const producer = produce(topic, events, {
        perSecond: 1500,
        batch: 50,
        garbageAfter: [20, 90],
      });
      void producer.finally(() => (producing = false)).catch(() => undefined);

      // Freeze the sink now and then and look. Every probe is a consistent snapshot (a commit
      // is only sent after its files are renamed): it must never show a committed offset that
      // no file in place (or the DLQ) covers. After MIN_PROBES, the first probe that finds a file
      // in place whose range starts at or past its partition's committed offset (renamed, not
      // committed) kills the sink right there.
      const MIN_PROBES = 30;
      const t0 = Date.now();
      const snapshots: Array<{ files: LakeFileInfo[]; done: Map<number, bigint> }> = [];
      let caught: LakeFileInfo[] = [];
      let probes = 0;
      let kills = 0;
      /** No snapshot shows a committed offset that no file in place (or the DLQ) covers. */
      const checkSnapshots = async (): Promise<void> => {
        const dlq = (await dlqOffsets(cfg)).at;
        for (const { files, done } of snapshots) {
          for (const [p, upTo] of done) {
            const covered = new Set((dlq.get(p) ?? []).map(String));
            for (const f of files.filter((x) => x.partition === p)) {
              for (let o = f.first; o <= f.last; o++) covered.add(String(o));
            }
            for (let o = 0n; o < upTo; o++) {
              assert.ok(
                covered.has(String(o)),
                `partition ${p}: offset ${o} committed, in no file`,
              );
            }
          }
        }
      };
      while (caught.length === 0) {
        if (!producing) {
          await checkSnapshots();
          assert.fail(`no crash between a rename and a commit in ${probes} probes, ${kills} kills`);
        }
        const dead = sink.dead();
        assert.ok(dead === null, dead ?? '');
        await sleep(5 + Math.random() * 30);
        if ((await lakeFiles(dir)).length === 0) continue;
        probes += 1;
        sink.child.kill('SIGSTOP');
        const uncommitted = async () => {
          const files = await lakeFiles(dir);
          const done = await committed(admin, group, topic);
          snapshots.push({ files, done });
          return files.filter((f) => f.first >= (done.get(f.partition) ?? -1n));
        };
        if ((await uncommitted()).length === 0 || probes < MIN_PROBES) {
          sink.child.kill('SIGCONT');
          continue;
        }
        sink.child.kill('SIGKILL');
        await sink.exited;
        kills += 1;
        // A commit already on its way when the sink froze may still land: look again.
        await sleep(300);
        caught = await uncommitted();
        if (caught.length === 0) {
          sink = startSink(env);
          await sink.waitReady();
        }
      }
      const killedAt = Date.now() - t0;
      assert.ok(producing, 'the producer had finished before the kill');

      // Restarted with another roll size, so its rolls cannot coincide with the crashed one's
      // and overwrite it by name: only the cleanup on assignment keeps rows from doubling.
      sink = startSink({ ...env, RECSYS_LAKE_ROLL_RECORDS: '97' });
      await sink.waitReady();
      await producer;
      await waitCommitted(admin, group, topic, 90_000, sink.dead);
      sink.child.kill('SIGTERM');
      assert.equal(await sink.exited, 0, `unclean stop:\n${sink.output()}`);

      await verifyLake(admin, cfg, dir, events);
      await checkSnapshots();
      const removed = sink
        .output()
        .split('\n')
        .filter((l) => l.includes('removed lake files not covered by the committed offset'))
        .reduce((n, l) => n + (JSON.parse(l) as { removed: number }).removed, 0);
      assert.ok(
        removed >= caught.length,
        `the restart removed ${removed} files; ${caught.length} were renamed and not committed`,
      );
      t.diagnostic(
        `killed after ${killedAt} ms (${probes} probes, ${kills} kills; committed offsets covered by ` +
          `files in all ${snapshots.length} snapshots) with ${caught.length} ` +
          `renamed, uncommitted files (${caught.map((f) => f.path.split('/').pop()).join(', ')}); ` +
          `the restart removed ${removed}; 12,000 events, each once`,
      );
    });
  });
});
