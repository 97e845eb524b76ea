/**
 * The lake's Parquet format and file plumbing: the columns, how one event becomes a row of the
 * DuckDB table a roll fills, fsync helpers, and the `date=…/hour=…` directory listing.
 */
import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DuckDBTimestampTZValue, type DuckDBAppender } from '@duckdb/node-api';
import type { UserEvent } from '../schemas/index.js';
import type { ConsumedRecord } from './consumer.js';
import { hourOf, isLakeTime } from './lake-layout.js';

/** Output columns, in order; the table has one more, `hour_key`, that routes rows to files. */
const COLUMNS: ReadonlyArray<readonly [string, string]> = [
  ['eventId', 'VARCHAR'],
  ['userId', 'VARCHAR'],
  ['sessionId', 'VARCHAR'],
  ['itemId', 'VARCHAR'],
  ['type', 'VARCHAR'],
  ['ts', 'TIMESTAMPTZ'],
  ['context_page', 'VARCHAR'],
  ['context_position', 'INTEGER'],
  ['context_device', 'VARCHAR'],
  ['value', 'DOUBLE'],
  ['receivedAt', 'TIMESTAMPTZ'],
  ['source', 'VARCHAR'],
  ['kafka_partition', 'INTEGER'],
  ['kafka_offset', 'BIGINT'],
];
export const SELECT_LIST = COLUMNS.map(([name]) => `"${name}"`).join(', ');
export const TABLE_COLUMNS = COLUMNS.map(([name, type]) => `"${name}" ${type}`)
  .concat(['hour_key INTEGER'])
  .join(', ');
export const PARQUET = '(FORMAT parquet, COMPRESSION zstd)';
// DuckDB runs beside the consumer on a small machine: one thread (a 100,000-row zstd file took
// 90 ms on it), and a memory bound past which tables spill to a temp directory.
export const DUCKDB_THREADS = '1';
export const DUCKDB_MEMORY_LIMIT = '512MB';

export const sqlString = (s: string): string => `'${s.replaceAll("'", "''")}'`;

/** Appends one event as a row; returns its hour. Hot path: one native call per column. */
export function append(a: DuckDBAppender, r: ConsumedRecord<UserEvent>, offset: bigint): number {
  const e = r.value;
  if (!isLakeTime(e.ts) || !isLakeTime(e.receivedAt)) {
    throw new RangeError(`${r.topic}/${r.partition}@${r.offset}: time outside the lake's range`);
  }
  const hour = hourOf(e.ts);
  a.appendVarchar(e.eventId);
  a.appendVarchar(e.userId);
  if (e.sessionId === null) a.appendNull();
  else a.appendVarchar(e.sessionId);
  a.appendVarchar(e.itemId);
  a.appendVarchar(e.type);
  a.appendTimestampTZ(new DuckDBTimestampTZValue(BigInt(e.ts) * 1000n));
  const c = e.context;
  if (c?.page == null) a.appendNull();
  else a.appendVarchar(c.page);
  if (c?.position == null) a.appendNull();
  else a.appendInteger(c.position);
  if (c?.device == null) a.appendNull();
  else a.appendVarchar(c.device);
  if (e.value === null) a.appendNull();
  else a.appendDouble(e.value);
  a.appendTimestampTZ(new DuckDBTimestampTZValue(BigInt(e.receivedAt) * 1000n));
  a.appendVarchar(e.source);
  a.appendInteger(r.partition);
  a.appendBigInt(offset);
  a.appendInteger(hour);
  a.endRow();
  return hour;
}

/** fsyncs a file's data; returns its size. */
export async function fsyncFile(path: string): Promise<number> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
    return (await fh.stat()).size;
  } finally {
    await fh.close();
  }
}

/** fsyncs a directory, so the names created, renamed or removed in it survive a crash. */
export async function fsyncDir(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * The `date=…/hour=…` directories of one topic's lake directory, relative to it, dates then
 * hours in directory order; none when the directory does not exist.
 */
export async function hourDirs(topicDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const date of await subdirs(topicDir, 'date=')) {
    for (const hour of await subdirs(join(topicDir, date), 'hour=')) out.push(`${date}/${hour}`);
  }
  return out;
}

async function subdirs(path: string, prefix: string): Promise<string[]> {
  try {
    const entries = await readdir(path, { withFileTypes: true });
    return entries.filter((e) => e.isDirectory() && e.name.startsWith(prefix)).map((e) => e.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
