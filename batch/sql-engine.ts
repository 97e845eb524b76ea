/**
 * The engine the batch's ETL and candidate SQL run in (`RECSYS_BATCH_ENGINE`): the embedded
 * DuckDB (default, `duck.ts`) or Spark (`spark.ts`, a PySpark session for a lake beyond one
 * machine). `etl.ts` and `candidates.ts` hand both the SAME SQL text; the engines differ only in
 * how inputs are registered and outputs written, which are the methods below, and in this one
 * dialect shim:
 *
 *   - The SQL is written in the dialect both accept: Spark SQL names where the two differ
 *     (`unix_millis(ts)`, `max_by(x, y)`, `any_value`, `CAST(x AS STRING)`), DuckDB learns the one
 *     it lacks as a macro (`DUCKDB_SHIMS` in `duck.ts`: `unix_millis` = `epoch_ms`). No `UPDATE`,
 *     `ALTER`, `DISTINCT ON` or table functions (`read_parquet`) in the shared text.
 *   - Inputs are views made by {@link SqlEngine.readParquet} / {@link SqlEngine.readJsonLines};
 *     tables are materialised by {@link SqlEngine.createTable} (DuckDB `CREATE TEMP TABLE`, Spark
 *     a cached view); paths never appear in the SQL text; outputs go through {@link SqlEngine.writeParquet}: one zstd Parquet file at
 *     the path given, on both engines, so the steps after (training, publish) read the same files.
 *
 * Integer widths may differ between the two (DuckDB's `row_number()` is BIGINT, Spark's INT;
 * DuckDB sums integers to HUGEINT): readers convert with `Number()`. Floating-point sums may
 * differ in the last bits (summation order); `engine-parity.ts` compares two runs' tables.
 *
 * Opening one: `open-engine.ts`.
 *
 * @example
 *   const engine = await openSqlEngine(config, log);
 *   try {
 *     await engine.readParquet('raw', glob);
 *     const [[n]] = await engine.rows('SELECT count(*) FROM raw');
 *   } finally { await engine.close(); }
 */
import type { Config } from '../core/index.js';

/** A column type both engines spell the same (Spark reads STRING; DuckDB aliases it). */
export type ColumnType = 'STRING' | 'DOUBLE' | 'BOOLEAN' | 'BIGINT' | 'TIMESTAMP';

export interface SqlEngine {
  readonly name: Config['batch']['engine'];
  /**
   * Parquet files (a path or glob; Hive-style directories; files whose columns differ are merged
   * by name) as view `name`. `columns`, when given, are the ones the SQL reads: Spark reads
   * them with that schema instead of inferring one from every file; DuckDB reads all.
   */
  readParquet(name: string, path: string, columns?: Record<string, ColumnType>): Promise<void>;
  /** A JSON Lines file with fixed columns (missing fields NULL) as view `name`. */
  readJsonLines(name: string, path: string, columns: Record<string, ColumnType>): Promise<void>;
  /** The query as view `name`: run again wherever it is read (for cheap projections). */
  createView(name: string, query: string): Promise<void>;
  /** Runs the query once and keeps its rows as table `name` for the statements after. */
  createTable(name: string, query: string): Promise<void>;
  /** Writes the query's rows to ONE Parquet file (zstd) at `path`, replacing it. */
  writeParquet(query: string, path: string): Promise<void>;
  /** The query's rows; integers and decimals as JS numbers. */
  rows(query: string): Promise<unknown[][]>;
  close(): Promise<void>;
}

/** First column of the first row, as a number (0 for none). */
export async function scalar(engine: SqlEngine, query: string): Promise<number> {
  const rows = await engine.rows(query);
  return Number(rows[0]?.[0] ?? 0);
}
