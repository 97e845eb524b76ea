/**
 * The replay's arithmetic: rank metrics of one list of outcomes, and the breakdowns the report
 * shows. A rank is the 0-based position of the true item in the list shown, null when it was
 * not shown; a rank at or past K is a miss too.
 *
 *   HR@K   = share of events whose item was in the top K
 *   MRR@K  = mean of 1 / (rank + 1) over events (0 for a miss)
 *   NDCG@K = mean of 1 / log2(rank + 2) (one relevant item, so the ideal DCG is 1)
 *
 * @example
 *   rankMetrics([0, 2, null], 20); // { events: 3, hits: 2, hr: 0.667, mrr: 0.444, ndcg: 0.5 }
 */

/** What one system showed for one replayed event. */
export interface Outcome {
  rank: number | null;
  /** The user's how-many-th replayed event this was (1-based). */
  nth: number;
  /** The user had no events in the history prefix. */
  cold: boolean;
  /** `source` of the hit item (served feed only), else null. */
  source: string | null;
  /** Items shown. */
  shown: number;
  /** Shown items the user had consumed before (history or earlier in the replay). */
  consumedShown: number;
  /** Shown items per source (served feed only). */
  slots?: Record<string, number>;
}

export interface RankMetrics {
  events: number;
  hits: number;
  hr: number;
  mrr: number;
  ndcg: number;
}

export function rankMetrics(ranks: readonly (number | null)[], k: number): RankMetrics {
  let hits = 0;
  let rr = 0;
  let dcg = 0;
  for (const r of ranks) {
    if (r === null || r < 0 || r >= k) continue;
    hits++;
    rr += 1 / (r + 1);
    dcg += 1 / Math.log2(r + 2);
  }
  const n = ranks.length;
  return {
    events: n,
    hits,
    hr: n ? hits / n : 0,
    mrr: n ? rr / n : 0,
    ndcg: n ? dcg / n : 0,
  };
}

/** Buckets of "the user's Nth replayed event". */
export const NTH_BUCKETS: readonly { label: string; min: number; max: number }[] = [
  { label: '1', min: 1, max: 1 },
  { label: '2-5', min: 2, max: 5 },
  { label: '6-20', min: 6, max: 20 },
  { label: '21-100', min: 21, max: 100 },
  { label: '101+', min: 101, max: Infinity },
];

export interface SystemReport extends RankMetrics {
  /** Distinct items shown / catalog size. */
  coverage: number;
  distinctShown: number;
  /** Share of all slots shown that held an item the user had consumed. */
  consumedShare: number;
  cold: RankMetrics;
  warm: RankMetrics;
  byNth: Record<string, RankMetrics>;
  /** Hits per source of the hit item (served feed). */
  hitsBySource: Record<string, number>;
  /** Slots shown per source (served feed): hits per slot tell what each source's share earns. */
  slotsBySource: Record<string, number>;
}

/**
 * Everything the report says of one system. `distinctShown` is counted by the caller (it holds
 * the shown item ids).
 */
export function summarize(
  outcomes: readonly Outcome[],
  k: number,
  distinctShown: number,
  catalogSize: number,
): SystemReport {
  const ranks = (pick: (o: Outcome) => boolean) =>
    rankMetrics(
      outcomes.filter(pick).map((o) => o.rank),
      k,
    );
  const byNth: Record<string, RankMetrics> = {};
  for (const b of NTH_BUCKETS) byNth[b.label] = ranks((o) => o.nth >= b.min && o.nth <= b.max);
  const hitsBySource: Record<string, number> = {};
  const slotsBySource: Record<string, number> = {};
  let shown = 0;
  let consumed = 0;
  for (const o of outcomes) {
    shown += o.shown;
    consumed += o.consumedShown;
    for (const [source, n] of Object.entries(o.slots ?? {})) {
      slotsBySource[source] = (slotsBySource[source] ?? 0) + n;
    }
    if (o.rank !== null && o.rank < k && o.source !== null) {
      hitsBySource[o.source] = (hitsBySource[o.source] ?? 0) + 1;
    }
  }
  return {
    ...ranks(() => true),
    coverage: catalogSize ? distinctShown / catalogSize : 0,
    distinctShown,
    consumedShare: shown ? consumed / shown : 0,
    cold: ranks((o) => o.cold),
    warm: ranks((o) => !o.cold),
    byNth,
    hitsBySource,
    slotsBySource,
  };
}

/** Nearest-rank percentiles (p in 0..1) of `values`; NaN when empty. */
export function percentiles(
  values: readonly number[],
  ps: readonly number[] = [0.5, 0.99],
): Record<string, number> {
  const s = Float64Array.from(values).sort();
  const out: Record<string, number> = {};
  for (const p of ps) {
    const i = Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1));
    out[`p${Math.round(p * 100)}`] = s.length ? (s[i] as number) : NaN;
  }
  return out;
}
