/**
 * The embedded DuckDB every batch step runs its SQL in: modest memory (spills to a temp
 * directory beyond it) and two threads, sized for the 2-core machine the stack runs on. The
 * bundled DuckDB has no ICU extension, so `TIMESTAMP`/`TIMESTAMPTZ` casts are always UTC (setting
 * a TimeZone would fail): date and hour strings never depend on the host.
 *
 * @example
 *   const db = await openBatchDb();
 *   try { await db.conn.run('SELECT 1'); } finally { db.close(); }
 */
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import type { ColumnType, SqlEngine } from './sql-engine.js';

export interface BatchDbOptions {
  /** DuckDB memory limit, e.g. '1GB'. @default '1GB' */
  memoryLimit?: string;
  /** @default 2 */
  threads?: number;
}

export interface BatchDb {
  instance: DuckDBInstance;
  conn: DuckDBConnection;
  close(): void;
}

export async function openBatchDb(options: BatchDbOptions = {}): Promise<BatchDb> {
  const instance = await DuckDBInstance.create(':memory:', {
    threads: String(options.threads ?? 2),
    memory_limit: options.memoryLimit ?? '1GB',
  });
  const conn = await instance.connect();
  // Row order is never relied on (every result that needs one says ORDER BY): lets DuckDB
  // write and aggregate in parallel without keeping input order.
  await conn.run('SET preserve_insertion_order = false');
  return {
    instance,
    conn,
    close() {
      conn.closeSync();
      instance.closeSync();
    },
  };
}

/** A SQL string literal. */
export function sqlString(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

/** Statements DuckDB runs at open so it accepts the Spark names the shared SQL uses. */
export const DUCKDB_SHIMS: readonly string[] = ['CREATE TEMP MACRO unix_millis(t) AS epoch_ms(t)'];

const PARQUET = '(FORMAT parquet, COMPRESSION zstd)';

/** DuckDB as the batch's {@link SqlEngine}: views, temp tables and `COPY` in one in-memory DB. */
export async function openDuckEngine(options: BatchDbOptions = {}): Promise<SqlEngine> {
  const db = await openBatchDb(options);
  for (const sql of DUCKDB_SHIMS) await db.conn.run(sql);
  const typed = (columns: Record<string, ColumnType>): string =>
    `{${Object.entries(columns)
      .map(([name, type]) => `${name}: '${type === 'STRING' ? 'VARCHAR' : type}'`)
      .join(', ')}}`;
  return {
    name: 'duckdb',
    async readParquet(name, path) {
      await db.conn.run(`
        CREATE OR REPLACE TEMP VIEW ${name} AS SELECT *
        FROM read_parquet(${sqlString(path)}, hive_partitioning = true, union_by_name = true)`);
    },
    async readJsonLines(name, path, columns) {
      await db.conn.run(`
        CREATE OR REPLACE TEMP VIEW ${name} AS SELECT *
        FROM read_json(${sqlString(path)}, format = 'newline_delimited', columns = ${typed(columns)})`);
    },
    async createView(name, query) {
      await db.conn.run(`CREATE OR REPLACE TEMP VIEW ${name} AS ${query}`);
    },
    async createTable(name, query) {
      await db.conn.run(`CREATE OR REPLACE TEMP TABLE ${name} AS ${query}`);
    },
    async writeParquet(query, path) {
      await db.conn.run(`COPY (${query}) TO ${sqlString(path)} ${PARQUET}`);
    },
    async rows(query) {
      const rows = (await db.conn.runAndReadAll(query)).getRowsJS();
      return rows.map((row) => row.map((v) => (typeof v === 'bigint' ? Number(v) : v)));
    },
    async close() {
      db.close();
    },
  };
}
