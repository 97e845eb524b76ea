/**
 * The pure half of building a feed: mixing the candidate sources, exclusions, impression
 * fatigue and the diversity rule. No I/O here (the feed service reads Redis and passes the
 * lists in), so every rule is unit-tested on in-memory inputs.
 *
 * The mix is the one training builds (`batch/rerank.ts`, step 3), so the reranker scores the
 * same kind of candidate lists it learnt on:
 *   - `batch`: the user's precomputed candidates, with their batch score;
 *   - `covis`: co-visitation neighbours of the user's most recent items (newest first), scored
 *     neighbour score / (1 + position of the recent item);
 *   - `trending`: trending items (counts) overall and in the user's top categories;
 *   - `popularity`: the most popular items overall (decayed interaction counts).
 * An item proposed by several sources keeps each source's (best) score.
 *
 * @example
 *   const mixed = mixCandidates({ batch, recent, neighbours, trending, popular }, 200);
 *   const kept = excludeItems(mixed, { purchased, unavailable });
 */
import type { CandidateSource } from './rank-features.js';

export interface Scored {
  itemId: string;
  score: number;
}

export interface MixInput {
  /** Batch candidates, best first. */
  batch: readonly Scored[];
  /** The user's recent items, newest first (only those whose neighbours count). */
  recent: readonly string[];
  /** Co-visitation neighbours per recent item, best first. */
  neighbours: ReadonlyMap<string, readonly Scored[]>;
  /** Trending lists (overall and per category), each best first. */
  trending: readonly (readonly Scored[])[];
  /** Popular items overall, best first. */
  popular: readonly Scored[];
}

export interface MixedCandidate {
  itemId: string;
  /** Score from each source that proposed the item. */
  scores: Partial<Record<CandidateSource, number>>;
  /** The source the item is shown as coming from: the first of `SOURCE_PRIORITY` that proposed it. */
  source: CandidateSource;
}

/** Which source an item proposed by several is attributed to (served log, `FeedItem.source`). */
export const SOURCE_PRIORITY: readonly CandidateSource[] = [
  'batch',
  'covis',
  'trending',
  'popularity',
];

/**
 * Mixes the sources into at most `cap` distinct candidates.
 *
 * Steps: (1) each source's ranked list (co-visitation lists merged by their position-discounted
 * score, trending lists by count) with the best score per item; (2) scores of every proposal
 * are kept for every item, whether or not it survives the cap; (3) which items survive the cap
 * is decided round-robin over the sources by rank, so a long batch list cannot crowd out the
 * real-time sources (a user who just touched items gets their neighbours ranked).
 */
export function mixCandidates(input: MixInput, cap: number): MixedCandidate[] {
  const lists: Record<CandidateSource, Map<string, number>> = {
    batch: new Map(),
    covis: new Map(),
    trending: new Map(),
    popularity: new Map(),
  };
  const add = (source: CandidateSource, itemId: string, score: number): void => {
    const m = lists[source];
    const prev = m.get(itemId);
    if (prev === undefined || score > prev) m.set(itemId, score);
  };
  for (const c of input.batch) add('batch', c.itemId, c.score);
  input.recent.forEach((item, pos) => {
    for (const nb of input.neighbours.get(item) ?? [])
      add('covis', nb.itemId, nb.score / (1 + pos));
  });
  for (const list of input.trending) for (const c of list) add('trending', c.itemId, c.score);
  for (const c of input.popular) add('popularity', c.itemId, c.score);

  const ranked = SOURCE_PRIORITY.map((s) =>
    [...lists[s]].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)),
  );
  const out: MixedCandidate[] = [];
  const seen = new Set<string>();
  const longest = Math.max(0, ...ranked.map((r) => r.length));
  for (let rank = 0; rank < longest && out.length < cap; rank++) {
    for (let s = 0; s < ranked.length && out.length < cap; s++) {
      const entry = (ranked[s] as [string, number][])[rank];
      if (!entry || seen.has(entry[0])) continue;
      const itemId = entry[0];
      seen.add(itemId);
      const scores: Partial<Record<CandidateSource, number>> = {};
      let source: CandidateSource | null = null;
      for (const src of SOURCE_PRIORITY) {
        const v = lists[src].get(itemId);
        if (v !== undefined) {
          scores[src] = v;
          source ??= src;
        }
      }
      out.push({ itemId, scores, source: source as CandidateSource });
    }
  }
  return out;
}

/** Drops candidates the user must not see: items just purchased and unavailable items. */
export function excludeItems<T extends { itemId: string }>(
  candidates: readonly T[],
  exclude: { purchased: Iterable<string>; unavailable: ReadonlySet<string> },
): T[] {
  const bought = new Set(exclude.purchased);
  return candidates.filter((c) => !bought.has(c.itemId) && !exclude.unavailable.has(c.itemId));
}

/**
 * Impression fatigue: items shown to the user `threshold` times or more without an interaction
 * move after the others; both groups keep their order. Items in `interacted` (the user's recent
 * items) are never demoted, whatever the count says.
 */
export function demoteFatigued<T extends { itemId: string }>(
  ranked: readonly T[],
  impressions: ReadonlyMap<string, number>,
  threshold: number,
  interacted: Iterable<string> = [],
): T[] {
  if (impressions.size === 0) return [...ranked];
  const touched = new Set(interacted);
  const fresh: T[] = [];
  const tired: T[] = [];
  for (const c of ranked) {
    const n = impressions.get(c.itemId) ?? 0;
    if (n >= threshold && !touched.has(c.itemId)) tired.push(c);
    else fresh.push(c);
  }
  return fresh.concat(tired);
}

/**
 * The diversity rule: at most `maxPerCategory` items of one category in the first `top`
 * positions. Greedy: walk the ranked list; an item whose category is full is deferred (kept in
 * order) and placed after the top; if too few items qualify, the top is filled from the
 * deferred ones in order. Items of unknown category (null) are not limited.
 */
export function diversify<T extends { categoryL1: string | null }>(
  ranked: readonly T[],
  maxPerCategory: number,
  top = 10,
): T[] {
  const head: T[] = [];
  const deferred: T[] = [];
  const perCategory = new Map<string, number>();
  let i = 0;
  for (; i < ranked.length && head.length < top; i++) {
    const c = ranked[i] as T;
    const cat = c.categoryL1;
    if (cat === null) {
      head.push(c);
      continue;
    }
    const n = perCategory.get(cat) ?? 0;
    if (n < maxPerCategory) {
      perCategory.set(cat, n + 1);
      head.push(c);
    } else deferred.push(c);
  }
  // Not enough variety to fill the top: the deferred ones fill it, best first.
  while (head.length < top && deferred.length > 0) head.push(deferred.shift() as T);
  return head.concat(deferred, ranked.slice(i));
}
