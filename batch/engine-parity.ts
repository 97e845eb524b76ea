/**
 * Are two batch builds the same? Compares every table the ETL and the candidates write (the
 * published ones and those training reads) of two runs, e.g. DuckDB's and Spark's over one lake,
 * row by row on each table's key.
 *
 * Equal means: the same columns, the same keys, and in every row strings, booleans and NULLs
 * identical and numbers within `tolerance` relative to their size (|a - b| <= tolerance *
 * max(1, |a|, |b|)); integer widths are not compared (DuckDB's BIGINT ranks are Spark's INT).
 * Ranks are numbers too, so a swapped rank is a difference. The tolerance exists for sums of
 * doubles, whose last bits depend on the order an engine adds them in.
 *
 * @example
 *   const diffs = await compareBatchOutputs(batchTables(duckEtl, duckCands), batchTables(sparkEtl, sparkCands));
 *   diffs.filter((d) => !d.equal); // []
 */
import { openBatchDb, sqlString } from './duck.js';
import type { CandidatePaths } from './candidates.js';
import type { EtlPaths } from './etl.js';

/** Each compared table's key (unique per row). */
export const TABLE_KEYS: Readonly<Record<string, readonly string[]>> = {
  events: ['eventId'],
  interactions_train: ['userId', 'itemId'],
  interactions_valid: ['userId', 'itemId'],
  item_stats: ['itemId'],
  items: ['itemId'],
  neighbours: ['itemId', 'neighbourId'],
  user_candidates: ['userId', 'itemId'],
  popular: ['category', 'itemId'],
};

/** The Parquet file of each table in {@link TABLE_KEYS}. */
export function batchTables(etl: EtlPaths, cands: CandidatePaths): Record<string, string> {
  return {
    events: etl.events,
    interactions_train: etl.trainInteractions,
    interactions_valid: etl.validInteractions,
    item_stats: etl.itemStats,
    items: etl.items,
    neighbours: cands.neighbours,
    user_candidates: cands.users,
    popular: cands.popular,
  };
}

export type Row = Readonly<Record<string, unknown>>;

export interface TableDiff {
  table: string;
  equal: boolean;
  rows: [number, number];
  /** Column names only one side has. */
  columns: string[];
  /** Keys only in the first / only in the second (at most 5 each shown). */
  onlyInA: string[];
  onlyInB: string[];
  /** Rows whose values differ beyond the tolerance (at most 5 shown), and how many. */
  mismatches: { key: string; column: string; a: unknown; b: unknown }[];
  mismatchCount: number;
  /** Largest relative difference of a number column over matched rows (0 when all equal). */
  maxRelDiff: number;
}

/** Compares two tables' rows on `key`; see the module doc for what equal means. */
export function diffRows(
  table: string,
  a: readonly Row[],
  b: readonly Row[],
  key: readonly string[],
  tolerance = 1e-9,
): TableDiff {
  // A Parquet table's rows all have its columns: the first row names them.
  const colsA = new Set(Object.keys(a[0] ?? {}));
  const colsB = new Set(Object.keys(b[0] ?? {}));
  const columns = [...colsA, ...colsB].filter((c) => !(colsA.has(c) && colsB.has(c)));
  const keyOf = (r: Row): string => key.map((k) => String(r[k] ?? '\u0000null')).join('|');
  const byKey = new Map(b.map((r) => [keyOf(r), r]));
  const onlyInA: string[] = [];
  const mismatches: TableDiff['mismatches'] = [];
  let mismatchCount = 0;
  let maxRelDiff = 0;
  const seen = new Set<string>();
  for (const ra of a) {
    const k = keyOf(ra);
    seen.add(k);
    const rb = byKey.get(k);
    if (!rb) {
      onlyInA.push(k);
      continue;
    }
    for (const column of Object.keys(ra)) {
      if (!(column in rb)) continue;
      const [va, vb] = [plain(ra[column]), plain(rb[column])];
      let same: boolean;
      if (typeof va === 'number' && typeof vb === 'number') {
        const rel = Math.abs(va - vb) / Math.max(1, Math.abs(va), Math.abs(vb));
        if (rel > maxRelDiff) maxRelDiff = rel;
        same = rel <= tolerance || (Number.isNaN(va) && Number.isNaN(vb));
      } else same = va === vb;
      if (!same) {
        mismatchCount++;
        if (mismatches.length < 5) mismatches.push({ key: k, column, a: va, b: vb });
      }
    }
  }
  const onlyInB = b.map(keyOf).filter((k) => !seen.has(k));
  const equal =
    columns.length === 0 &&
    a.length === b.length &&
    onlyInA.length === 0 &&
    onlyInB.length === 0 &&
    mismatchCount === 0;
  return {
    table,
    equal,
    rows: [a.length, b.length],
    columns,
    onlyInA: onlyInA.slice(0, 5),
    onlyInB: onlyInB.slice(0, 5),
    mismatches,
    mismatchCount,
    maxRelDiff,
  };
}

/** bigint to number; DuckDB decimals (objects with a `toDouble`) to number. */
function plain(v: unknown): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (v && typeof v === 'object' && 'toDouble' in v && typeof v.toDouble === 'function') {
    return (v as { toDouble(): number }).toDouble();
  }
  return v;
}

/** Reads one Parquet file's rows (DuckDB, whichever engine wrote it). */
export async function readParquetRows(path: string): Promise<Row[]> {
  const db = await openBatchDb();
  try {
    const r = await db.conn.runAndReadAll(`SELECT * FROM read_parquet(${sqlString(path)})`);
    return r.getRowObjectsJS() as Row[];
  } finally {
    db.close();
  }
}

/** Compares every table of {@link TABLE_KEYS} present in both `a` and `b` (table → file). */
export async function compareBatchOutputs(
  a: Readonly<Record<string, string>>,
  b: Readonly<Record<string, string>>,
  tolerance = 1e-9,
): Promise<TableDiff[]> {
  const out: TableDiff[] = [];
  for (const [table, key] of Object.entries(TABLE_KEYS)) {
    const [pa, pb] = [a[table], b[table]];
    if (!pa || !pb) throw new Error(`table ${table} missing from a batch build`);
    out.push(diffRows(table, await readParquetRows(pa), await readParquetRows(pb), key, tolerance));
  }
  return out;
}
