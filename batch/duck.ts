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
