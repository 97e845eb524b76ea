/**
 * The reranker's training data: one query per user (the candidates served at a cut-off time),
 * features from {@link fillFeatures} (the same function serving calls) and a graded label from
 * what the user did with each candidate after the cut-off. Written as Parquet with DuckDB:
 * `qid` INTEGER, `label` INTEGER, then one FLOAT column per {@link FEATURE_NAMES} entry, in that
 * order (train.py takes the feature names from these columns).
 *
 * @example
 *   const features = new Float32Array(cands.length * FEATURE_COUNT);
 *   fillFeatures(features, ctx, cands);
 *   const labels = cands.map((c) => relevance(futureTypes.get(c.itemId) ?? []));
 *   await writeTrainingData('train.parquet', [{ qid: 1, features, labels }]);
 */
import { mkdir, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import type { EventType } from '../schemas/index.js';
import { FEATURE_COUNT, FEATURE_NAMES } from '../serving/rank-features.js';

/**
 * Graded relevance of one future interaction. A purchase is the goal; a cart or a like a strong
 * intent; a click or a view shows interest. Views count (1) so that users without clicks still
 * give the ranker something to learn; LightGBM's default gains (2^label - 1) then weigh a
 * purchase 7 times a view.
 */
export const LABEL_GRADES: Readonly<Record<EventType, number>> = {
  view: 1,
  click: 1,
  like: 2,
  add_to_cart: 2,
  purchase: 3,
};

/** The label of a candidate: the best grade among the user's future interactions with it. */
export function relevance(types: Iterable<EventType>): number {
  let best = 0;
  for (const t of types) best = Math.max(best, LABEL_GRADES[t] ?? 0);
  return best;
}

/** One query: a user's candidates, their features (row-major, FEATURE_COUNT each) and labels. */
export interface TrainingGroup {
  /** Query id, unique in the file (an integer; users are numbered by the caller). */
  qid: number;
  features: Float32Array;
  labels: ArrayLike<number>;
}

/**
 * Writes `groups` to a Parquet file at `path` (replaced atomically: written beside it and
 * renamed). Rows of a query are contiguous, in the order given. Returns the row count.
 */
export async function writeTrainingData(
  path: string,
  groups: Iterable<TrainingGroup>,
): Promise<number> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  const db = await DuckDBInstance.create(':memory:', {
    threads: '1',
    autoinstall_known_extensions: 'false',
  });
  let rows = 0;
  try {
    const conn = await db.connect();
    try {
      const cols = FEATURE_NAMES.map((n) => `"${n}" FLOAT NOT NULL`).join(', ');
      await conn.run(`CREATE TABLE t (qid INTEGER NOT NULL, label INTEGER NOT NULL, ${cols})`);
      const app = await conn.createAppender('t');
      try {
        for (const g of groups) {
          const n = g.labels.length;
          if (g.features.length !== n * FEATURE_COUNT) {
            throw new RangeError(
              `qid ${g.qid}: ${g.features.length} feature values for ${n} labels ` +
                `(expected ${n * FEATURE_COUNT})`,
            );
          }
          if (!Number.isInteger(g.qid)) throw new RangeError(`qid ${g.qid} is not an integer`);
          for (let i = 0; i < n; i++) {
            const label = g.labels[i] as number;
            // LightGBM lambdarank wants integer grades below its label_gain table (31 entries).
            if (!Number.isInteger(label) || label < 0 || label > 30) {
              throw new RangeError(`qid ${g.qid} row ${i}: label ${label} not an integer 0..30`);
            }
            app.appendInteger(g.qid);
            app.appendInteger(label);
            const o = i * FEATURE_COUNT;
            for (let j = 0; j < FEATURE_COUNT; j++) app.appendFloat(g.features[o + j] as number);
            app.endRow();
            rows++;
          }
        }
        app.flushSync();
      } finally {
        app.closeSync();
      }
      const target = tmp.replaceAll("'", "''");
      await conn.run(`COPY t TO '${target}' (FORMAT parquet, COMPRESSION zstd)`);
    } finally {
      conn.closeSync();
    }
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  } finally {
    db.closeSync();
  }
  await rename(tmp, path);
  return rows;
}
