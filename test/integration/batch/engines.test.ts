/**
 * RECSYS_BATCH_ENGINE: the ETL and candidate SQL on DuckDB and on Spark (PySpark in the project's
 * venv, installed on first use, `local[2]`, driver memory 1 GiB) over ONE generated lake give the
 * same tables: events, interactions (train and valid), item statistics, items, neighbours, user
 * candidates and popularity lists; the same keys, ranks, strings and counts, and floating-point
 * values within a relative 1e-9 (sums of doubles added in another order differ in the last bits;
 * measured up to about 1e-15). A DuckDB build with another co-visitation window must compare
 * unequal, so the comparison can fail on real files too. Needs no service: DuckDB is embedded
 * and Spark runs in-process on Java 17.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildCandidates, type CandidateResult } from '../../../batch/candidates.js';
import { batchTables, compareBatchOutputs, type TableDiff } from '../../../batch/engine-parity.js';
import { runEtl, type EtlResult } from '../../../batch/etl.js';
import { generate } from '../../../batch/generate.js';
import { openSqlEngine } from '../../../batch/open-engine.js';
import { loadConfig, type Config } from '../../../core/config.js';
import { config as baseConfig, log } from '../harness.js';

/** Relative tolerance for floating-point columns. */
const TOLERANCE = 1e-9;

interface Build {
  etl: EtlResult;
  cands: CandidateResult;
  ms: { open: number; etl: number; candidates: number };
}

let dir = '';
let lakeDir = '';
let catalogPath = '';

/** ETL and candidates over the shared lake in one session of `engine`, into `<dir>/<name>`. */
async function build(
  engine: Config['batch']['engine'],
  name: string,
  windowPositions?: number,
): Promise<Build> {
  const config = loadConfig({
    ...process.env,
    RECSYS_BATCH_ENGINE: engine,
    RECSYS_LAKE_DIR: lakeDir,
    RECSYS_BATCH_DIR: join(dir, name),
  });
  const t0 = performance.now();
  const session = await openSqlEngine(config, log);
  const t1 = performance.now();
  try {
    const etl = await runEtl(config, log, { catalogPath, session });
    const t2 = performance.now();
    const cands = await buildCandidates(config, log, etl, {
      session,
      ...(windowPositions ? { windowPositions } : {}),
    });
    const ms = {
      open: Math.round(t1 - t0),
      etl: Math.round(t2 - t1),
      candidates: Math.round(performance.now() - t2),
    };
    return { etl, cands, ms };
  } finally {
    await session.close();
  }
}

const unequal = (diffs: TableDiff[]): TableDiff[] => diffs.filter((d) => !d.equal);

describe('batch engines: DuckDB and Spark give the same build', () => {
  let duck: Build;
  let spark: Build;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'batch-engines-'));
    lakeDir = join(dir, 'lake');
    catalogPath = join(dir, 'catalog.jsonl');
    await generate({
      seed: 5,
      events: 20_000,
      endTs: Date.UTC(2026, 0, 10),
      lakeDir,
      topic: baseConfig.kafka.topics.events,
      catalogPath,
    });
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('runs the same SQL on both and the tables are equal (floats within 1e-9 relative)', async (t) => {
    duck = await build('duckdb', 'duckdb');
    spark = await build('spark', 'spark');
    assert.equal(spark.cands.counts.userCandidates > 1000, true, 'a build worth comparing');
    assert.equal(spark.etl.cutoffTs, duck.etl.cutoffTs);
    assert.deepEqual(spark.etl.counts, duck.etl.counts);
    assert.deepEqual(spark.cands.counts, duck.cands.counts);

    const diffs = await compareBatchOutputs(
      batchTables(duck.etl.paths, duck.cands.paths),
      batchTables(spark.etl.paths, spark.cands.paths),
      TOLERANCE,
    );
    const maxRel = Math.max(...diffs.map((d) => d.maxRelDiff));
    t.diagnostic(
      `duckdb ${JSON.stringify(duck.ms)} ms, spark ${JSON.stringify(spark.ms)} ms; ` +
        diffs.map((d) => `${d.table} ${d.rows[0]} rows`).join(', ') +
        `; largest relative difference ${maxRel.toExponential(2)}`,
    );
    assert.deepEqual(unequal(diffs), [], 'every table equal');
    assert.ok(maxRel <= TOLERANCE);
  });

  it('finds the difference when one build differs (a co-visitation window of 2, not 5)', async () => {
    assert.ok(spark, 'the Spark build ran');
    const other = await build('duckdb', 'duckdb-window2', 2);
    const diffs = await compareBatchOutputs(
      batchTables(other.etl.paths, other.cands.paths),
      batchTables(spark.etl.paths, spark.cands.paths),
      TOLERANCE,
    );
    const differ = unequal(diffs).map((d) => d.table);
    assert.ok(differ.includes('neighbours'), `neighbours differ (unequal: ${differ.join(', ')})`);
    assert.ok(differ.includes('user_candidates'), 'user candidates differ');
    assert.ok(!differ.includes('events'), 'the ETL tables stay equal');
  });
});
