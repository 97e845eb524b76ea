/**
 * Opens the batch's SQL engine (`sql-engine.ts`) that `RECSYS_BATCH_ENGINE` names.
 *
 * @example
 *   await withSqlEngine(config, log, {}, (engine) => engine.rows('SELECT 1'));
 */
import type { Config, Logger } from '../core/index.js';
import { openDuckEngine } from './duck.js';
import { openSparkEngine } from './spark.js';
import type { SqlEngine } from './sql-engine.js';

export interface SqlEngineOptions {
  /** DuckDB memory limit, e.g. '1GB'. @default '1GB' */
  memoryLimit?: string;
  /** DuckDB threads. @default 2 */
  threads?: number;
  /** Overrides `config.batch.engine`. */
  engine?: Config['batch']['engine'];
  /**
   * An engine already open (one Spark session for the whole batch run): used, and left open.
   * @default a new one, closed at the end
   */
  session?: SqlEngine;
}

/**
 * Opens the configured engine (`config.batch.engine`, or `options.engine`). Spark installs its
 * Python requirements into the venv on first use and starts one session for everything run
 * through the returned engine; close it when done.
 */
export async function openSqlEngine(
  config: Readonly<Config>,
  log: Logger,
  options: SqlEngineOptions = {},
): Promise<SqlEngine> {
  const engine = options.engine ?? config.batch.engine;
  if (engine === 'spark') {
    return openSparkEngine(
      { venv: config.batch.pythonVenv, master: config.batch.sparkMaster },
      log,
    );
  }
  return openDuckEngine(options);
}

/** Runs `fn` in `options.session`, or in a new engine it closes after. */
export async function withSqlEngine<T>(
  config: Readonly<Config>,
  log: Logger,
  options: SqlEngineOptions,
  fn: (engine: SqlEngine) => Promise<T>,
): Promise<T> {
  if (options.session) return fn(options.session);
  const engine = await openSqlEngine(config, log, options);
  try {
    return await fn(engine);
  } finally {
    await engine.close();
  }
}
