/**
 * The heuristic blend: how a feed is ordered while no reranker serves (none trained yet, or none
 * that beat this blend on the batch's held-out data). It reads the reranker's own feature
 * matrix, so the batch scores it on exactly the rows and features its models are compared on.
 *
 * Score per row, in order of weight:
 *   - the co-visitation sum over the user's recent items (`score_covis_sum`), divided by the
 *     item's popularity to the power {@link BlendWeights.covisDamping}, relative to the feed's
 *     best (so the best scores 1, whatever the seeds' count): what the user just did is the
 *     strongest signal on every real log replayed (bench/README.md);
 *   - the EASE weights summed over the user's recent items (`profile_ease`), relative to the
 *     feed's best, times {@link BlendWeights.ease}: the user's longer profile;
 *   - the batch candidate score (at most 1), half weight;
 *   - 1 / rank among trending, then among popular items: what a user without history or
 *     neighbours sees, and the tie-break everywhere else;
 *   - the item's popularity, a last tie-break.
 * The two weights differ by domain (a damped co-visitation and the EASE profile win on MovieLens
 * and lose on the REES46 shop), so each batch picks them on its training queries
 * (`batch/blend-weights.ts`) and publishes them in its version's meta; serving reads them with
 * the version. Until a batch has, both are 0.
 */
import { FEATURE_COUNT, FEATURE_NAMES } from './rank-features.js';

const col = (name: string): number => {
  const i = FEATURE_NAMES.indexOf(name);
  if (i < 0) throw new Error(`feature ${name} missing from FEATURE_NAMES`);
  return i;
};

const COVIS = col('score_covis_sum');
const EASE = col('profile_ease');
const POPULARITY_LOG = col('item_popularity_log');

/** The blend's tuned weights. */
export interface BlendWeights {
  /** Weight of the relative EASE profile score. */
  ease: number;
  /** Exponent of the popularity the co-visitation sum is divided by. */
  covisDamping: number;
}

export const DEFAULT_BLEND: Readonly<BlendWeights> = Object.freeze({ ease: 0, covisDamping: 0 });

/** Names of the weights in a batch version's meta hash (`BATCH.meta`). */
const META = { ease: 'blend_ease', covisDamping: 'blend_covis_damping' } as const;

/** The meta fields that publish `weights` with a batch version. */
export function blendMeta(weights: Readonly<BlendWeights>): Record<string, number> {
  return { [META.ease]: weights.ease, [META.covisDamping]: weights.covisDamping };
}

/** The weights a version's meta hash holds; {@link DEFAULT_BLEND} where one is absent or bad. */
export function blendWeightsOf(meta: Readonly<Record<string, string>>): BlendWeights {
  const read = (field: string, fallback: number): number => {
    const v = Number(meta[field] ?? Number.NaN);
    return Number.isFinite(v) && v >= 0 ? v : fallback;
  };
  return {
    ease: read(META.ease, DEFAULT_BLEND.ease),
    covisDamping: read(META.covisDamping, DEFAULT_BLEND.covisDamping),
  };
}

/** Column and weight of each term after the two relative ones. */
const TERMS: readonly (readonly [number, number])[] = [
  [col('score_batch'), 0.5],
  [col('rrank_trending'), 0.1],
  [col('rrank_popularity'), 0.05],
  [POPULARITY_LOG, 0.001],
];

/**
 * A feed's rows reduced to what the weights act on, so a caller scoring one feed with several
 * weights (`batch/blend-weights.ts`) reads the feature matrix once.
 */
export interface BlendRows {
  n: number;
  /** `score_covis_sum` per row. */
  covis: Float64Array;
  /** `profile_ease` per row. */
  ease: Float64Array;
  /** The item's popularity count (from `item_popularity_log`), at least 1. */
  popularity: Float64Array;
  /** The weighted sum of the fixed terms. */
  fixed: Float64Array;
}

/** `n` rows' {@link BlendRows}, into `into` when it holds that many (else new arrays). */
export function blendRows(matrix: ArrayLike<number>, n: number, into?: BlendRows): BlendRows {
  const rows =
    into && into.covis.length >= n
      ? into
      : {
          n,
          covis: new Float64Array(n),
          ease: new Float64Array(n),
          popularity: new Float64Array(n),
          fixed: new Float64Array(n),
        };
  rows.n = n;
  for (let i = 0; i < n; i++) {
    const o = i * FEATURE_COUNT;
    rows.covis[i] = matrix[o + COVIS] as number;
    rows.ease[i] = matrix[o + EASE] as number;
    // item_popularity_log is log1p(count): the count back, at least 1.
    rows.popularity[i] = Math.max(1, Math.expm1(matrix[o + POPULARITY_LOG] as number));
    let fixed = 0;
    for (const [c, w] of TERMS) fixed += w * (matrix[o + c] as number);
    rows.fixed[i] = fixed;
  }
  return rows;
}

/** `rows.popularity[i] ** damping` into `out` (what {@link scoreBlendRows} divides by). */
export function dampers(rows: BlendRows, damping: number, out: Float64Array): Float64Array {
  for (let i = 0; i < rows.n; i++) out[i] = (rows.popularity[i] as number) ** damping;
  return out;
}

/** Damped co-visitation per row while the feed's best is found (grown as feeds need). */
let damped = new Float64Array(256);

/**
 * The blend's score of each row of `rows` into `out`. `divisors`, when given, must be
 * `dampers(rows, weights.covisDamping)` (computed once for several EASE weights).
 */
export function scoreBlendRows(
  rows: BlendRows,
  out: Float32Array,
  weights: Readonly<BlendWeights> = DEFAULT_BLEND,
  divisors?: Float64Array,
): Float32Array {
  const n = rows.n;
  if (out.length < n) throw new RangeError(`score buffer holds ${out.length}, need ${n}`);
  if (damped.length < n) damped = new Float64Array(n);
  const damping = weights.covisDamping;
  let bestCovis = 0;
  let bestEase = 0;
  for (let i = 0; i < n; i++) {
    const covis = rows.covis[i] as number;
    const d =
      covis > 0 && damping > 0
        ? covis / (divisors ? (divisors[i] as number) : (rows.popularity[i] as number) ** damping)
        : covis;
    damped[i] = d;
    if (d > bestCovis) bestCovis = d;
    const ease = rows.ease[i] as number;
    if (ease > bestEase) bestEase = ease;
  }
  const covisWeight = bestCovis > 0 ? 1 / bestCovis : 0;
  const easeWeight = bestEase > 0 ? weights.ease / bestEase : 0;
  for (let i = 0; i < n; i++) {
    out[i] =
      covisWeight * (damped[i] as number) +
      easeWeight * (rows.ease[i] as number) +
      (rows.fixed[i] as number);
  }
  return out;
}

/** Rows of the feed {@link blendScores} is scoring (grown as feeds need). */
let scratch: BlendRows | undefined;

/** The blend's score of each of the `n` rows of `matrix` (row-major, `FEATURE_COUNT` wide). */
export function blendScores(
  matrix: ArrayLike<number>,
  n: number,
  out: Float32Array,
  weights: Readonly<BlendWeights> = DEFAULT_BLEND,
): Float32Array {
  scratch = blendRows(matrix, n, scratch);
  return scoreBlendRows(scratch, out, weights);
}
