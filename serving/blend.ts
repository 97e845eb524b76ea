/**
 * The heuristic blend: how a feed is ordered while no reranker serves (none trained yet, or none
 * that beat this blend on the batch's held-out data). It reads the reranker's own feature
 * matrix, so the batch scores it on exactly the rows and features its models are compared on.
 *
 * Score per row, in order of weight:
 *   - the co-visitation sum over the user's recent items (`score_covis_sum`), relative to the
 *     feed's best (so the best co-visited item scores 1, whatever the seeds' count): what the
 *     user just did is the strongest signal on every real log replayed (bench/README.md);
 *   - the batch candidate score (at most 1), half weight;
 *   - 1 / rank among trending, then among popular items: what a user without history or
 *     neighbours sees, and the tie-break everywhere else;
 *   - the item's popularity, a last tie-break.
 */
import { FEATURE_COUNT, FEATURE_NAMES } from './rank-features.js';

const col = (name: string): number => {
  const i = FEATURE_NAMES.indexOf(name);
  if (i < 0) throw new Error(`feature ${name} missing from FEATURE_NAMES`);
  return i;
};

const COVIS = col('score_covis_sum');

/** Column and weight of each term after co-visitation's. */
const TERMS: readonly (readonly [number, number])[] = [
  [col('score_batch'), 0.5],
  [col('rrank_trending'), 0.1],
  [col('rrank_popularity'), 0.05],
  [col('item_popularity_log'), 0.001],
];

/** The blend's score of each of the `n` rows of `matrix` (row-major, `FEATURE_COUNT` wide). */
export function blendScores(matrix: ArrayLike<number>, n: number, out: Float32Array): Float32Array {
  if (out.length < n) throw new RangeError(`score buffer holds ${out.length}, need ${n}`);
  let best = 0;
  for (let i = 0; i < n; i++) best = Math.max(best, matrix[i * FEATURE_COUNT + COVIS] as number);
  const covisWeight = best > 0 ? 1 / best : 0;
  for (let i = 0; i < n; i++) {
    const o = i * FEATURE_COUNT;
    let s = covisWeight * (matrix[o + COVIS] as number);
    for (const [c, w] of TERMS) s += w * (matrix[o + c] as number);
    out[i] = s;
  }
  return out;
}
