/**
 * Where the lake puts things, and which files a (re)assigned partition must clean up. Pure
 * functions, no I/O: the writer (`lake-writer.ts`) and the batch readers share this layout.
 *
 * A file lives at `<dir>/topic=<topic>/date=YYYY-MM-DD/hour=HH/<topic>-<p>-<first>-<last>.parquet`
 * (Hive-style directories, UTC hour of the event's `ts`), so DuckDB or Spark read the lake as one
 * table with `topic`, `date` and `hour` columns, e.g. in DuckDB
 * `read_parquet('<lakeGlob(dir, topic)>', hive_partitioning = true)`.
 *
 * `<first>-<last>` is the offset range of the roll the file belongs to, not only of its own rows:
 * the writer closes every open file of a partition at once (one "roll"), and each file holds the
 * roll's records of one hour. Consecutive rolls tile the partition's offsets, so a committed
 * offset always falls on a roll boundary and every file is either wholly committed or not at all.
 * A replay from the committed offset that rolls at the same offsets writes the same names.
 */

const HOUR_MS = 3_600_000;
/** 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: what a `date=YYYY-MM-DD` directory and a Parquet timestamp can hold. */
const MIN_TS = -62_167_219_200_000;
const MAX_TS = 253_402_300_799_999;
const FILE = /^(.+)-(\d+)-(\d+)-(\d+)\.parquet$/;
const TEMP = /^\.(.+\.parquet)\.tmp$/;

/** Is `ts` (epoch ms) a time the lake can file and store? */
export function isLakeTime(ts: number): boolean {
  return Number.isSafeInteger(ts) && ts >= MIN_TS && ts <= MAX_TS;
}

/** The hour an epoch-ms time falls in, as hours since the epoch (UTC). */
export function hourOf(ts: number): number {
  return Math.floor(ts / HOUR_MS);
}

/** `topic=<topic>/date=YYYY-MM-DD/hour=HH` of an hour from {@link hourOf}. */
export function partitionDir(topic: string, hour: number): string {
  const iso = new Date(hour * HOUR_MS).toISOString();
  return `topic=${topic}/date=${iso.slice(0, 10)}/hour=${iso.slice(11, 13)}`;
}

/** The glob that reads one topic's lake (every date and hour). */
export function lakeGlob(dir: string, topic: string): string {
  return `${dir.replace(/\/+$/, '')}/topic=${topic}/*/*/*.parquet`;
}

/** `<topic>-<partition>-<first>-<last>.parquet`: a roll's offset range, both ends included. */
export function fileName(topic: string, partition: number, first: bigint, last: bigint): string {
  return `${topic}-${partition}-${first}-${last}.parquet`;
}

/** The name a file is written under before it is renamed into place (not matched by `*.parquet`). */
export function tempName(name: string): string {
  return `.${name}.tmp`;
}

/** A file found in a topic's hour directory: a lake file, or a temp file left by a crash. */
export interface LakeFile {
  /** Directory relative to the lake root, e.g. `topic=t/date=2026-01-02/hour=03`. */
  dir: string;
  name: string;
  topic: string;
  partition: number;
  first: bigint;
  last: bigint;
  temp: boolean;
}

/** Parses a lake or temp file name of `topic`; null for anything else. */
export function parseFileName(topic: string, dir: string, name: string): LakeFile | null {
  const temp = TEMP.exec(name);
  const m = FILE.exec(temp ? (temp[1] as string) : name);
  if (!m || m[1] !== topic) return null;
  const first = BigInt(m[3] as string);
  const last = BigInt(m[4] as string);
  if (last < first) return null;
  return { dir, name, topic, partition: Number(m[2]), first, last, temp: temp !== null };
}

export interface RecoveryPlan {
  /** Written but never committed (or temp files): the replay from `committed` rewrites them. */
  remove: LakeFile[];
  /** Straddle `committed`: keep their rows below it, under the name of the shortened range. */
  trim: Array<{ file: LakeFile; name: string }>;
}

/**
 * What to do with one partition's files before writing it again from `committed` (the offset
 * consumption restarts at). Files whose range ends below `committed` are committed: kept.
 *   1. temp files: removed (a crash left them before their rename);
 *   2. a range starting at or above `committed`: removed, its records come again;
 *   3. a range containing `committed` (first < committed <= last): trimmed to first..committed-1.
 *      The writer commits only on roll boundaries, so this happens only when the start offset
 *      moved otherwise (a new group starting at a log start that retention advanced into a
 *      range, an offset reset): the rows below it are not in Kafka any more, the rest come again.
 */
export function planRecovery(files: readonly LakeFile[], committed: bigint): RecoveryPlan {
  const plan: RecoveryPlan = { remove: [], trim: [] };
  for (const f of files) {
    if (f.temp || f.first >= committed) plan.remove.push(f);
    else if (f.last >= committed) {
      plan.trim.push({ file: f, name: fileName(f.topic, f.partition, f.first, committed - 1n) });
    }
  }
  return plan;
}
