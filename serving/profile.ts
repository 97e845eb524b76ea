/**
 * The user-profile rank features of each candidate: over all of the user's recent items
 * (`session.recent`, newest first, unweighted), the sum of each item's EASE weight towards the
 * candidate (`profile_ease`, `batch/ease.ts`) and of its batch co-visitation score for it
 * (`profile_covis`). The co-visitation source (`mix.ts`) weighs the newest `seedItems` by
 * position, what the user is doing now; these read the longer taste behind it. On the MovieLens
 * replay the EASE sum was the strongest feature beside co-visitation (bench/README.md).
 *
 * Serving (`feed/pipeline.ts`) and training (`batch/rerank.ts`) both call it on the lists of
 * the same batch version, so the features agree.
 *
 * @example
 *   const profile = profileScores(session.recent, ease, neighbours, rows.ids, rows.n);
 *   profile[2 * i]; // profile_ease of row i; profile[2 * i + 1]: profile_covis
 */
import type { ScoredList } from './scored-list.js';

/** Values per row in a profile array: [ease, covis]. */
export const PROFILE_VALUES = 2;

/**
 * For rows `ids[0..n)`: [sum of EASE weights, sum of co-visitation scores] over the `recent`
 * items' lists (an item without a list adds nothing), at `2i` and `2i + 1`.
 */
export function profileScores(
  recent: readonly string[],
  ease: ReadonlyMap<string, ScoredList>,
  covis: ReadonlyMap<string, ScoredList>,
  ids: readonly string[],
  n: number,
): Float64Array {
  const out = new Float64Array(PROFILE_VALUES * n);
  if (recent.length === 0 || n === 0) return out;
  const sums = new Map<string, number>();
  for (let kind = 0; kind < PROFILE_VALUES; kind++) {
    const lists = kind === 0 ? ease : covis;
    if (lists.size === 0) continue;
    sums.clear();
    for (const item of recent) {
      const list = lists.get(item);
      if (list === undefined) continue;
      for (let j = 0; j < list.ids.length; j++) {
        const id = list.ids[j] as string;
        sums.set(id, (sums.get(id) ?? 0) + (list.scores[j] as number));
      }
    }
    if (sums.size === 0) continue;
    for (let i = 0; i < n; i++) out[PROFILE_VALUES * i + kind] = sums.get(ids[i] as string) ?? 0;
  }
  return out;
}
