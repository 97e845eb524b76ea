/**
 * Recovery of one topic-partition's lake files when it is assigned at offset C (step 1 in
 * `lake-writer.ts`): files whose range starts at or after C (written, never committed) and temp
 * files are removed, a file containing C is trimmed to the rows below C (`planRecovery`).
 */
import { readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { DuckDBInstance } from '@duckdb/node-api';
import type { Logger } from '../core/index.js';
import { parseFileName, planRecovery, tempName, type LakeFile } from './lake-layout.js';
import { fsyncDir, fsyncFile, hourDirs, PARQUET, sqlString } from './lake-parquet.js';
import type { LakeMetrics } from './lake-metrics.js';

export class LakeRecovery {
  readonly #db: DuckDBInstance;
  readonly #root: string;
  readonly #metrics: LakeMetrics;
  readonly #log: Logger;
  /** One directory scan per topic per assignment, shared by its partitions. */
  readonly #scans = new Map<string, Promise<LakeFile[]>>();

  constructor(db: DuckDBInstance, root: string, metrics: LakeMetrics, log: Logger) {
    this.#db = db;
    this.#root = root;
    this.#metrics = metrics;
    this.#log = log;
  }

  /** Partitions were revoked: the next assignment scans the directories again. */
  forgetScans(): void {
    this.#scans.clear();
  }

  async recover(topic: string, partition: number, start: bigint): Promise<void> {
    let scan = this.#scans.get(topic);
    if (!scan) {
      scan = this.#scan(topic);
      this.#scans.set(topic, scan);
      // A failed scan is not cached: the retry of `assign` scans again.
      scan.catch(() => this.#scans.delete(topic));
    }
    const files = (await scan).filter((f) => f.partition === partition);
    const plan = planRecovery(files, start);
    for (const { file, name } of plan.trim) await this.#trim(file, name, start);
    const dirs = new Set<string>();
    for (const f of plan.remove) {
      await rm(join(this.#root, f.dir, f.name), { force: true });
      dirs.add(f.dir);
    }
    for (const d of dirs) await fsyncDir(join(this.#root, d));
    const removed = plan.remove.length;
    const trimmed = plan.trim.length;
    if (removed > 0) this.#metrics.recovered.inc({ action: 'removed' }, removed);
    if (trimmed > 0) this.#metrics.recovered.inc({ action: 'trimmed' }, trimmed);
    if (removed + trimmed > 0) {
      this.#log.info(
        { topic, partition, offset: String(start), removed, trimmed },
        'removed lake files not covered by the committed offset',
      );
    }
  }

  /** Every lake and temp file of `topic`, from its date and hour directories. */
  async #scan(topic: string): Promise<LakeFile[]> {
    const top = `topic=${topic}`;
    const out: LakeFile[] = [];
    for (const hour of await hourDirs(join(this.#root, top))) {
      const dir = `${top}/${hour}`;
      for (const name of await readdir(join(this.#root, dir))) {
        const f = parseFileName(topic, dir, name);
        if (f) out.push(f);
      }
    }
    return out;
  }

  /** Rewrites the rows of `file` below `start` as `name`, then removes `file`. */
  async #trim(file: LakeFile, name: string, start: bigint): Promise<void> {
    const dir = join(this.#root, file.dir);
    const source = join(dir, file.name);
    const temp = join(dir, tempName(name));
    const conn = await this.#db.connect();
    try {
      const rows = `FROM read_parquet(${sqlString(source)}, hive_partitioning = false) WHERE kafka_offset < ${start}`;
      const count = await conn.runAndReadAll(`SELECT count(*) ${rows}`);
      if (Number(count.getRows()[0]?.[0] ?? 0) > 0) {
        await conn.run(`COPY (SELECT * ${rows}) TO ${sqlString(temp)} ${PARQUET}`);
        await fsyncFile(temp);
        await rename(temp, join(dir, name));
        await fsyncDir(dir);
      }
      await rm(source);
      await fsyncDir(dir);
    } finally {
      conn.closeSync();
    }
  }
}
