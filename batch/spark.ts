/**
 * Spark as the batch's {@link SqlEngine}: one PySpark session (`batch/python/spark_sql.py`) per
 * engine, started in the project's venv (PySpark from `requirements-spark.txt`, installed on first
 * use) on the installed Java 17, fed the same SQL as DuckDB, one JSON request per line.
 *
 * Sized like DuckDB for the 2-core machine: driver memory 1 GiB, master `local[2]` (two task
 * threads) unless `RECSYS_SPARK_MASTER` names a cluster (`spark://host:7077`; then the batch and
 * lake directories must be paths every executor sees, e.g. a shared mount). The session starts
 * once (about 10 s) and serves every statement of the ETL and the candidates.
 *
 * @example
 *   const engine = await openSparkEngine({ venv: config.batch.pythonVenv, master: 'local[2]' }, log);
 *   try { await engine.rows('SELECT 1'); } finally { await engine.close(); }
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Logger } from '../core/index.js';
import { ensurePythonEnv, PythonStepError, repoRoot } from './python-env.js';
import type { ColumnType, SqlEngine } from './sql-engine.js';

export interface SparkEngineOptions {
  venv: string;
  /** `local[N]` or a cluster URL. @default 'local[2]' */
  master?: string;
  /** @default '1g' */
  driverMemory?: string;
  /**
   * Partitions of a shuffle (joins, GROUP BY, windows): 8 keeps the small tasks few on two
   * threads; adaptive execution merges smaller ones. @default 8
   */
  shufflePartitions?: number;
  /** Session start-up limit, ms. @default 180_000 */
  startTimeoutMs?: number;
}

interface Reply {
  id?: number;
  ok?: boolean;
  ms?: number;
  rows?: unknown[][];
  error?: string;
  ready?: boolean;
  version?: string;
}

/** Starts the Spark session; every method sends one request and waits for its reply. */
export async function openSparkEngine(
  options: SparkEngineOptions,
  log: Logger,
): Promise<SqlEngine> {
  const master = options.master ?? 'local[2]';
  const py = await ensurePythonEnv(options.venv, log, { spark: true });
  const t0 = performance.now();
  const child = spawn(
    py.bin('python'),
    [
      join(repoRoot(), 'batch', 'python', 'spark_sql.py'),
      '--master',
      master,
      '--driver-memory',
      options.driverMemory ?? '1g',
      '--shuffle-partitions',
      String(options.shufflePartitions ?? 8),
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  const tail: string[] = [];
  createInterface({ input: child.stderr }).on('line', (line) => {
    tail.push(line);
    if (tail.length > 40) tail.shift();
    log.debug({ spark: line }, 'spark output');
  });
  const replies = createInterface({ input: child.stdout });
  const waiting: ((r: Reply) => void)[] = [];
  let exited: string | null = null;
  const failAll = (why: string): void => {
    exited = why;
    for (const w of waiting.splice(0)) w({ ok: false, error: why });
  };
  replies.on('line', (line) => {
    let reply: Reply;
    try {
      reply = JSON.parse(line) as Reply;
    } catch {
      reply = { ok: false, error: `unreadable reply: ${line.slice(0, 200)}` };
    }
    waiting.shift()?.(reply);
  });
  child.on('error', (err) => failAll(`spark_sql.py: ${err.message}`));
  child.on('close', (code, signal) => failAll(`spark_sql.py exited ${code ?? signal}`));
  const next = (): Promise<Reply> =>
    exited ? Promise.resolve({ ok: false, error: exited }) : new Promise((r) => waiting.push(r));
  const failure = (what: string, error: string | undefined): PythonStepError =>
    new PythonStepError(`spark ${what}: ${error ?? 'no reply'}\n${tail.slice(-15).join('\n')}`);

  const startLimit = options.startTimeoutMs ?? 180_000;
  const timer = setTimeout(() => failAll(`no Spark session after ${startLimit} ms`), startLimit);
  const ready = await next();
  clearTimeout(timer);
  if (!ready.ready) {
    child.kill('SIGKILL');
    throw failure('start', ready.error);
  }
  const startMs = Math.round(performance.now() - t0);
  log.info({ master, version: ready.version, startMs }, 'spark session up');

  let id = 0;
  let queue: Promise<unknown> = Promise.resolve();
  /** One request at a time: replies come back in order. */
  const call = (op: string, body: Record<string, unknown>): Promise<Reply> => {
    const run = async (): Promise<Reply> => {
      const reply = next();
      child.stdin.write(JSON.stringify({ id: ++id, op, ...body }) + '\n');
      const r = await reply;
      if (!r.ok) throw failure(op, r.error);
      log.debug({ op, name: body.name ?? body.path, ms: r.ms }, 'spark statement done');
      return r;
    };
    const p = queue.then(run, run);
    queue = p.catch(() => undefined);
    return p;
  };
  const ddl = (columns: Record<string, ColumnType>): string =>
    Object.entries(columns)
      .map(([name, type]) => `${name} ${type}`)
      .join(', ');

  return {
    name: 'spark',
    async readParquet(name, path, columns) {
      await call('parquet', { name, path, ...(columns ? { schema: ddl(columns) } : {}) });
    },
    async readJsonLines(name, path, columns) {
      await call('json', { name, path, schema: ddl(columns) });
    },
    async createView(name, query) {
      await call('view', { name, sql: query });
    },
    async createTable(name, query) {
      await call('table', { name, sql: query });
    },
    async writeParquet(query, path) {
      await call('write', { sql: query, path });
    },
    async rows(query) {
      return (await call('rows', { sql: query })).rows ?? [];
    },
    async close() {
      if (exited) return;
      const gone = new Promise<void>((r) => child.once('close', () => r()));
      child.stdin.end();
      const kill = setTimeout(() => child.kill('SIGKILL'), 60_000);
      await gone;
      clearTimeout(kill);
      log.info({ master, sessionMs: Math.round(performance.now() - t0) }, 'spark session stopped');
    },
  };
}
