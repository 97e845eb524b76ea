/**
 * A ranked list of scored items as two parallel arrays, best first: how serving holds every
 * candidate source (batch candidates, neighbours, trending, popular).
 *
 * @example
 *   const top = firstOf({ ids: ['a', 'b', 'c'], scores: [3, 2, 1] }, 2); // ids ['a', 'b']
 */
export interface ScoredList {
  readonly ids: readonly string[];
  readonly scores: ArrayLike<number>;
}

export const EMPTY_LIST: ScoredList = Object.freeze({ ids: [], scores: [] });

/** The first `k` entries of a list (the list itself when it is no longer). */
export function firstOf(list: ScoredList, k: number): ScoredList {
  if (list.ids.length <= k) return list;
  return {
    ids: list.ids.slice(0, k),
    scores: Array.prototype.slice.call(list.scores, 0, k) as number[],
  };
}

/**
 * Two lists as one, best first: an id in both keeps the higher score; equal scores in id order.
 *
 * @example
 *   mergeLists({ ids: ['a', 'b'], scores: [1, 0.5] }, { ids: ['b', 'c'], scores: [1, 0.2] });
 *   // { ids: ['a', 'b', 'c'], scores: [1, 1, 0.2] }
 */
export function mergeLists(a: ScoredList, b: ScoredList): ScoredList {
  const best = new Map<string, number>();
  for (const list of [a, b]) {
    for (let i = 0; i < list.ids.length; i++) {
      const id = list.ids[i] as string;
      const score = list.scores[i] as number;
      if (!(score <= (best.get(id) ?? -Infinity))) best.set(id, score);
    }
  }
  const entries = [...best].sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1));
  return { ids: entries.map(([id]) => id), scores: entries.map(([, v]) => v) };
}
