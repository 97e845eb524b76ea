/**
 * Picks the heuristic blend's two weights (`serving/blend.ts`) for this batch's data: every pair
 * of a small grid is scored by mean NDCG@10 (graded gains, as `evaluate.ts`) over the training
 * queries, and the best pair wins (ties: the first in grid order, the plain blend first). Two
 * numbers fitted on thousands of queries do not overfit the way a tree model on them can, and
 * the held-out evaluation and the gate then score the blend with the weights picked here.
 *
 * @example
 *   const { weights, ndcg } = tuneBlend(trainGroups); // { ease: 0.35, covisDamping: 0.2 }, 0.146
 */
import {
  blendRows,
  dampers,
  DEFAULT_BLEND,
  scoreBlendRows,
  type BlendRows,
  type BlendWeights,
} from '../serving/blend.js';
import { dcg } from './evaluate.js';
import type { TrainingGroup } from './training-data.js';

/** The grid: EASE profile weights, and exponents of the popularity damping co-visitation. */
export const EASE_WEIGHTS = [0, 0.1, 0.2, 0.35, 0.5, 0.8] as const;
export const COVIS_DAMPINGS = [0, 0.1, 0.2, 0.3] as const;

const K = 10;

export interface BlendTuning {
  weights: BlendWeights;
  /** Mean NDCG@10 of the picked weights over the queries with a relevant item. */
  ndcg: number;
  /** The plain blend's ({@link DEFAULT_BLEND}) on the same queries. */
  plainNdcg: number;
  queries: number;
}

/** The best DCG@10 of a query's labels (its ideal order). */
function idealDcg(labels: ArrayLike<number>): number {
  return dcg(
    Array.from(labels)
      .sort((a, b) => b - a)
      .slice(0, K),
  );
}

/**
 * NDCG@10 of one query ranked by `scores` (the first K of the descending order; ties: the
 * earlier row first).
 */
export function queryNdcg(
  scores: Float32Array,
  labels: ArrayLike<number>,
  n: number,
  ideal = idealDcg(labels),
): number {
  const top: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = scores[i] as number;
    if (top.length === K && s <= (scores[top[K - 1] as number] as number)) continue;
    let at = top.length;
    while (at > 0 && (scores[top[at - 1] as number] as number) < s) at--;
    top.splice(at, 0, i);
    if (top.length > K) top.pop();
  }
  return ideal > 0 ? dcg(top.map((row) => labels[row] as number)) / ideal : 0;
}

/**
 * The grid's best weights over `groups` (queries without a relevant item are skipped). Each
 * query's matrix is read once and its popularity dampers computed once per damping; the EASE
 * weights then only rescale.
 */
export function tuneBlend(groups: readonly TrainingGroup[]): BlendTuning {
  const useful = groups.map((g) => ({ g, ideal: idealDcg(g.labels) })).filter((u) => u.ideal > 0);
  let longest = 1;
  for (const { g } of useful) longest = Math.max(longest, g.labels.length);
  const scores = new Float32Array(longest);
  const divisors = new Float64Array(longest);
  let rows: BlendRows | undefined;
  // sums[d * EASE_WEIGHTS.length + e]: summed NDCG of damping d and EASE weight e.
  const sums = new Float64Array(COVIS_DAMPINGS.length * EASE_WEIGHTS.length);
  for (const { g, ideal } of useful) {
    const n = g.labels.length;
    const query = blendRows(g.features, n, rows);
    rows = query;
    COVIS_DAMPINGS.forEach((covisDamping, d) => {
      dampers(query, covisDamping, divisors);
      EASE_WEIGHTS.forEach((ease, e) => {
        const w = { ease, covisDamping };
        const s = scoreBlendRows(query, scores, w, divisors);
        const at = d * EASE_WEIGHTS.length + e;
        sums[at] = (sums[at] as number) + queryNdcg(s, g.labels, n, ideal);
      });
    });
  }
  const mean = (d: number, e: number): number =>
    useful.length > 0 ? (sums[d * EASE_WEIGHTS.length + e] as number) / useful.length : 0;
  // The plain blend (both weights 0) is the grid's first pair.
  const plainNdcg = mean(0, 0);
  let best: BlendTuning = {
    weights: { ...DEFAULT_BLEND },
    ndcg: plainNdcg,
    plainNdcg,
    queries: useful.length,
  };
  EASE_WEIGHTS.forEach((ease, e) => {
    COVIS_DAMPINGS.forEach((covisDamping, d) => {
      const ndcg = mean(d, e);
      if (ndcg > best.ndcg) best = { ...best, weights: { ease, covisDamping }, ndcg };
    });
  });
  return best;
}
