/**
 * The lake writer on a temp directory with its embedded DuckDB (no services): rolls by count and
 * by age, files per hour, commits only after files are in place, skips a retried chunk's records,
 * drops what a revocation left, cleans up on assignment (remove, trim), and holds back while a
 * write fails. Files are read back with hyparquet, a reader independent of the writer.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { Registry } from 'prom-client';
import { createLogger } from '../../../core/log.js';
import { sleep } from '../../../core/retry.js';
import type { UserEvent } from '../../../schemas/types.js';
import type { ConsumedRecord } from '../../../stream/consumer.js';
import { fileName, tempName } from '../../../stream/lake-layout.js';
import { lakeMetrics } from '../../../stream/lake-metrics.js';
import { LakeWriteError, LakeWriter } from '../../../stream/lake-writer.js';

const log = createLogger('silent');
const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 10, 25, 10, 15);
const DIR_A = 'topic=t/date=2026-11-25/hour=10';
const DIR_B = 'topic=t/date=2026-11-25/hour=11';
const dirs: string[] = [];
after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

function event(i: number, ts: number): UserEvent {
  return {
    eventId: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    userId: `u${i % 3}`,
    sessionId: i % 2 ? `s${i}` : null,
    itemId: `i${i}`,
    type: i % 2 ? 'click' : 'view',
    ts,
    context: i % 3 === 0 ? null : { page: 'home', position: i, device: i % 2 ? null : 'web' },
    value: i % 4 === 0 ? i + 0.25 : null,
    receivedAt: ts + 7,
    source: 'http',
  };
}

/** Offset `offset` of partition 3 of topic `t`; even offsets in hour 10, odd ones in hour 11. */
function rec(offset: number, ts = T0 + (offset % 2) * HOUR): ConsumedRecord<UserEvent> {
  return {
    topic: 't',
    partition: 3,
    offset: String(offset),
    key: null,
    value: event(offset, ts),
    timestamp: ts,
  };
}
const end = (lastOffset: number) => ({ topic: 't', partition: 3, lastOffset: String(lastOffset) });

async function setup(rollRecords: number, rollMs = 600_000) {
  const dir = await mkdtemp(join(tmpdir(), 'lake-unit-'));
  dirs.push(dir);
  const registry = new Registry();
  const metrics = lakeMetrics(registry);
  const writer = await LakeWriter.open({ dir, rollRecords, rollMs, log, metrics });
  const commits: string[] = [];
  const assign = (offset: number) =>
    writer.assign('t', 3, String(offset), (next) => commits.push(next));
  return { dir, writer, commits, assign, registry };
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Every file under `dir`, relative, sorted. */
async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

async function rowsOf(path: string): Promise<Record<string, unknown>[]> {
  return parquetReadObjects({ file: await asyncBufferFromFile(path), compressors });
}

const offsetsOf = (rows: Record<string, unknown>[]) => rows.map((r) => Number(r.kafka_offset));

describe('lake writer', () => {
  it('rolls every file of the partition at once, per hour, and commits after the rename', async () => {
    const { dir, writer, commits, assign, registry } = await setup(4);
    await assign(0);
    await writer.take(
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((o) => rec(o)),
      end(9),
    );
    await waitFor('two rolls committed', () => commits.length === 2);
    assert.deepEqual(commits, ['4', '8']);
    assert.deepEqual(await listFiles(dir), [
      `${DIR_A}/${fileName('t', 3, 0n, 3n)}`,
      `${DIR_A}/${fileName('t', 3, 4n, 7n)}`,
      `${DIR_B}/${fileName('t', 3, 0n, 3n)}`,
      `${DIR_B}/${fileName('t', 3, 4n, 7n)}`,
    ]);
    assert.equal(writer.openFiles(), 2);
    assert.equal(writer.pendingRows(), 2);
    // The chunk's end moves the open roll past records that never reached the writer.
    await writer.take([], end(12));
    await writer.drain();
    assert.deepEqual(commits, ['4', '8', '13']);
    assert.deepEqual(offsetsOf(await rowsOf(join(dir, DIR_A, fileName('t', 3, 8n, 12n)))), [8]);
    assert.deepEqual(offsetsOf(await rowsOf(join(dir, DIR_B, fileName('t', 3, 0n, 3n)))), [1, 3]);

    // Every field comes back as written, ts and receivedAt as UTC timestamps.
    const row = (await rowsOf(join(dir, DIR_A, fileName('t', 3, 4n, 7n))))[0] as Record<
      string,
      unknown
    >;
    const e = event(4, T0);
    assert.deepEqual(row, {
      eventId: e.eventId,
      userId: e.userId,
      sessionId: null,
      itemId: e.itemId,
      type: 'view',
      ts: new Date(e.ts),
      context_page: 'home',
      context_position: 4,
      context_device: 'web',
      value: 4.25,
      receivedAt: new Date(e.ts + 7),
      source: 'http',
      kafka_partition: 3,
      kafka_offset: 4n,
    });
    const text = await registry.metrics();
    assert.match(text, /^recsys_lake_files_written_total 6$/m);
    assert.match(text, /^recsys_lake_rows_written_total 10$/m);
    assert.match(text, /^recsys_lake_file_write_seconds_count 6$/m);
    await writer.close();
  });

  it('rolls by age, and commits a roll that holds no record', async () => {
    const { dir, writer, commits, assign } = await setup(1000, 150);
    await assign(20);
    await writer.take([rec(20), rec(22)], end(22));
    await waitFor('aged roll committed', () => commits.length === 1);
    assert.deepEqual(commits, ['23']);
    assert.deepEqual(await listFiles(dir), [`${DIR_A}/${fileName('t', 3, 20n, 22n)}`]);
    // Only undecodable records in the next chunk: committed without a file.
    await writer.take([], end(30));
    await waitFor('empty roll committed', () => commits.length === 2);
    assert.deepEqual(commits, ['23', '31']);
    assert.equal((await listFiles(dir)).length, 1);
    await writer.close();
  });

  it('skips the records of a chunk it already took (the loop retries a failed handle)', async () => {
    const { dir, writer, commits, assign } = await setup(100);
    await assign(0);
    await writer.take([rec(0), rec(2)], end(2));
    await writer.take([rec(0), rec(2), rec(4)], end(4));
    await writer.drain();
    assert.deepEqual(commits, ['5']);
    assert.deepEqual(
      offsetsOf(await rowsOf(join(dir, DIR_A, fileName('t', 3, 0n, 4n)))),
      [0, 2, 4],
    );
    await writer.close();
  });

  it('drops and never commits what a revocation left, and ignores chunks after it', async () => {
    const { dir, writer, commits, assign } = await setup(100, 100);
    await assign(0);
    await writer.take([rec(0), rec(1)], end(1));
    writer.revokeAll();
    await writer.take([rec(2)], end(2));
    await sleep(400);
    assert.deepEqual(commits, []);
    assert.deepEqual(await listFiles(dir), []);
    assert.equal(writer.pendingRows(), 0);
    await writer.close();
  });

  it('on assignment removes files and temp files past the committed offset, and trims', async () => {
    const { dir, writer, commits, assign } = await setup(4);
    await assign(0);
    await writer.take(
      [0, 1, 2, 3, 4, 5, 6, 7].map((o) => rec(o)),
      end(7),
    );
    await waitFor('rolls committed', () => commits.length === 2);
    // What a crash between rename and commit leaves: a renamed roll past the committed offset
    // (8..11) and a temp file, plus a file of another partition that must stay.
    const leftover = join(dir, DIR_A, fileName('t', 3, 8n, 11n));
    await copyFile(join(dir, DIR_A, fileName('t', 3, 4n, 7n)), leftover);
    await writeFile(join(dir, DIR_B, tempName(fileName('t', 3, 8n, 11n))), 'partial');
    const other = join(dir, DIR_B, fileName('t', 4, 8n, 11n));
    await copyFile(join(dir, DIR_B, fileName('t', 3, 4n, 7n)), other);
    writer.revokeAll();

    await assign(8);
    const after8 = await listFiles(dir);
    assert.ok(!after8.includes(relative(dir, leftover)), 'uncommitted roll not removed');
    assert.ok(!after8.some((f) => f.endsWith('.tmp')), 'temp file not removed');
    assert.ok(after8.includes(relative(dir, other)), "another partition's file removed");
    assert.equal(after8.length, 5);

    // An offset reset into the middle of roll 4..7 (a new group whose log start moved there).
    writer.revokeAll();
    await assign(6);
    assert.deepEqual(
      (await listFiles(dir)).filter((f) => f.includes('-3-4-')),
      [`${DIR_A}/${fileName('t', 3, 4n, 5n)}`, `${DIR_B}/${fileName('t', 3, 4n, 5n)}`],
    );
    assert.deepEqual(offsetsOf(await rowsOf(join(dir, DIR_A, fileName('t', 3, 4n, 5n)))), [4]);
    assert.deepEqual(offsetsOf(await rowsOf(join(dir, DIR_B, fileName('t', 3, 4n, 5n)))), [5]);
    // The replay from 6 completes the range.
    await writer.take([rec(6), rec(7)], end(7));
    await writer.drain();
    assert.equal(commits.at(-1), '8');
    await writer.close();
  });

  it('holds back while files cannot be written, and catches up when they can', async () => {
    const { dir, writer, commits, assign } = await setup(2);
    await assign(0);
    // A file where the topic directory must go: every write fails until it is removed.
    await writeFile(join(dir, 'topic=t'), 'in the way');
    await writer.take([rec(0), rec(2), rec(4), rec(6)], end(6));
    await waitFor('a failed write', () => writer.failure !== null);
    await assert.rejects(writer.take([rec(8)], end(8)), LakeWriteError);
    assert.deepEqual(commits, []);
    await rm(join(dir, 'topic=t'));
    await waitFor('rolls committed after the disk is back', () => commits.length === 2, 20_000);
    // Rolls 0..2 and 3..6 (two records each), in order.
    assert.deepEqual(commits, ['3', '7']);
    assert.equal(writer.failure, null);
    await writer.take([rec(8)], end(8));
    await writer.drain();
    assert.deepEqual(commits, ['3', '7', '9']);
    await writer.close();
  });
});
