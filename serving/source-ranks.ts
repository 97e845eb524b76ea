/**
 * The per-source reciprocal-rank features of the reranker (`rank-features.ts`): for each
 * candidate source, the rank of every row it proposed among them, by the source's score.
 */
import { descendingOrder } from './order.js';

/** The candidate rows as sources proposed and scored them (a subset of `RankRows`). */
export interface SourceRows {
  n: number;
  /** Bit s is set when source s proposed the row. */
  proposed: Uint8Array;
  /** The score source s gave row i, at `i * sourceCount + s`. */
  scores: Float64Array;
  /** Optional: row i's position in source s's score order, at `i * sourceCount + s`. */
  sourcePos?: Int32Array;
}

// Scratch for the per-source reciprocal ranks, grown to the largest request seen: a request
// of N candidates needs sourceCount * N values, allocated once instead of per call.
let scoreScratch = new Float64Array(0);
let rrankScratch = new Float32Array(0);
let valueScratch = new Float64Array(0);
let rowScratch = new Uint32Array(0);
let orderScratch = new Uint32Array(0);
let placeScratch = new Int32Array(0);

/**
 * Per-source reciprocal ranks of one request's proposed rows ordered by score, per source
 * (`descendingOrder`: float32 precision, ties by row, NaN lowest). Returns source-major scratch
 * (valid until the next call): `scores[s * n + i]` the score source s gave row i,
 * `rranks[s * n + i]` 1 / its rank (0 where s did not propose row i).
 */
export function sourceRanks(
  rows: SourceRows,
  sourceCount: number,
): { scores: Float64Array; rranks: Float32Array } {
  const n = rows.n;
  if (scoreScratch.length < sourceCount * n) {
    scoreScratch = new Float64Array(sourceCount * n * 2);
    rrankScratch = new Float32Array(sourceCount * n * 2);
    valueScratch = new Float64Array(n * 2);
    rowScratch = new Uint32Array(n * 2);
    orderScratch = new Uint32Array(n * 2);
  }
  const sc = scoreScratch;
  const rr = rrankScratch;
  const pos = rows.sourcePos;
  for (let s = 0; s < sourceCount; s++) {
    const base = s * n;
    const bit = 1 << s;
    let m = 0;
    let last = -1;
    for (let i = 0; i < n; i++) {
      rr[base + i] = 0;
      if (((rows.proposed[i] as number) & bit) !== 0) {
        const v = rows.scores[i * sourceCount + s] as number;
        sc[base + i] = v;
        valueScratch[m] = v;
        rowScratch[m++] = i;
        if (pos !== undefined) last = Math.max(last, pos[i * sourceCount + s] as number);
      }
    }
    if (pos === undefined) {
      const order = descendingOrder(valueScratch, m, orderScratch);
      for (let r = 0; r < m; r++) {
        rr[base + (rowScratch[order[r] as number] as number)] = 1 / (r + 1);
      }
      continue;
    }
    // By position (a counting placement), then rows of one float32 score in row order, which
    // is how `descendingOrder` breaks ties.
    if (placeScratch.length <= last) placeScratch = new Int32Array(2 * (last + 1));
    placeScratch.fill(-1, 0, last + 1);
    for (let j = 0; j < m; j++) {
      const i = rowScratch[j] as number;
      placeScratch[pos[i * sourceCount + s] as number] = i;
    }
    let r = 0;
    for (let p = 0; p <= last; p++) {
      const i = placeScratch[p] as number;
      if (i < 0) continue;
      const key = rankKey(sc[base + i] as number);
      let j = r - 1;
      while (
        j >= 0 &&
        (rowScratch[j] as number) > i &&
        rankKey(sc[base + (rowScratch[j] as number)] as number) === key
      ) {
        rowScratch[j + 1] = rowScratch[j] as number;
        j--;
      }
      rowScratch[j + 1] = i;
      r++;
    }
    for (let q = 0; q < m; q++) rr[base + (rowScratch[q] as number)] = 1 / (q + 1);
  }
  return { scores: sc, rranks: rr };
}

/** A score as `descendingOrder` compares it: float32 precision, NaN as -Infinity, -0 as 0. */
function rankKey(v: number): number {
  return v !== v ? -Infinity : Math.fround(v);
}
