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
