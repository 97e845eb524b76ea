/**
 * Writes one hour's rows of a roll as a Parquet file: to a temp name, fsynced, renamed into
 * place, the directory fsynced (created durably first when new). A revoked partition's file is
 * removed instead of renamed.
 */
import { mkdir, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { DuckDBConnection } from '@duckdb/node-api';
import { partitionDir, tempName } from './lake-layout.js';
import type { LakeMetrics } from './lake-metrics.js';
import { fsyncDir, fsyncFile, PARQUET, SELECT_LIST, sqlString } from './lake-parquet.js';

export class HourFiles {
  readonly #root: string;
  readonly #metrics: LakeMetrics;
  /** Directories known to exist durably. */
  readonly #dirs = new Set<string>();

  constructor(root: string, metrics: LakeMetrics) {
    this.#root = root;
    this.#metrics = metrics;
  }

  /** Writes the rows of `hour` from the slot's table as `name`. */
  async write(
    slot: { conn: DuckDBConnection; table: string },
    topic: string,
    hour: number,
    name: string,
    roll: { rows: number; revoked: AbortSignal },
  ): Promise<void> {
    const t0 = performance.now();
    const dir = join(this.#root, partitionDir(topic, hour));
    await this.#ensureDir(dir);
    const temp = join(dir, tempName(name));
    let bytes: number;
    try {
      await slot.conn.run(
        `COPY (SELECT ${SELECT_LIST} FROM ${slot.table} WHERE hour_key = ${hour}) ` +
          `TO ${sqlString(temp)} ${PARQUET}`,
      );
      bytes = await fsyncFile(temp);
      if (roll.revoked.aborted) {
        await rm(temp, { force: true });
        throw roll.revoked.reason;
      }
      await rename(temp, join(dir, name));
      await fsyncDir(dir);
    } catch (err) {
      // The directory may have gone (a retention job); the retry creates it again.
      this.#dirs.delete(dir);
      throw err;
    }
    this.#metrics.files.inc();
    this.#metrics.rows.inc(roll.rows);
    this.#metrics.bytes.inc(bytes);
    this.#metrics.fileSeconds.observe((performance.now() - t0) / 1000);
  }

  /** Creates `dir` and makes its entry (and those of new parents) durable. */
  async #ensureDir(dir: string): Promise<void> {
    if (this.#dirs.has(dir)) return;
    const created = await mkdir(dir, { recursive: true });
    if (created !== undefined) {
      for (let d = dir; ; d = dirname(d)) {
        await fsyncDir(dirname(d));
        if (d === created || d === dirname(d)) break;
      }
    }
    this.#dirs.add(dir);
  }
}
