/**
 * The user-profile rank features of each candidate: over all of the user's recent items
 * (`session.recent`, newest first, unweighted), the sum of each item's EASE weight towards the
 * candidate (`profile_ease`, `batch/ease.ts`) and of its batch co-visitation score for it
 * (`profile_covis`). The co-visitation source (`mix.ts`) weighs the newest `seedItems` by
 * position, what the user is doing now; these read the longer taste behind it. In a simulation of
 * the MovieLens replay the EASE sum was the strongest feature beside co-visitation
 * (bench/README.md).
 *
 * Serving (`feed/pipeline.ts`) and training (`batch/rerank.ts`) both call it on the lists of
 * the same batch version, so the features agree.
 *
 * @example
 *   const profile = profileScores(session.recent, ease, neighbours, rows.keys, rows.n, table);
 *   profile[2 * i]; // profile_ease of row i; profile[2 * i + 1]: profile_covis
 */
import type { ScoredList } from './scored-list.js';

/** Values per row in a profile array: [ease, covis]. */
export const PROFILE_VALUES = 2;

/** Per item key: the running sum of one kind (zero outside a call), grown to the largest key. */
let scratch = new Float64Array(1024);

/**
 * For rows `0..n)` (item keys `rowKeys`): [sum of EASE weights, sum of co-visitation scores] over
 * the `recent` items' lists (an item without a list adds nothing), at `2i` and `2i + 1`. Items
 * are numbers (`items.keysOf` gives a list's keys; serving passes its item table, which caches them),
 * so a feed sums into a typed array instead of a map of strings.
 */
export function profileScores(
  recent: readonly string[],
  ease: ReadonlyMap<string, ScoredList>,
  covis: ReadonlyMap<string, ScoredList>,
  rowKeys: ArrayLike<number>,
  n: number,
  items: { keysOf(list: ScoredList): ArrayLike<number> },
): Float64Array {
  const out = new Float64Array(PROFILE_VALUES * n);
  if (recent.length === 0 || n === 0) return out;
  for (let kind = 0; kind < PROFILE_VALUES; kind++) {
    const lists = kind === 0 ? ease : covis;
    if (lists.size === 0) continue;
    const used: [ArrayLike<number>, ScoredList][] = [];
    for (const item of recent) {
      const list = lists.get(item);
      if (list === undefined) continue;
      const keys = items.keysOf(list);
      for (let j = 0; j < keys.length; j++) {
        const k = keys[j] as number;
        if (k >= scratch.length) grow(k);
        scratch[k] = (scratch[k] as number) + (list.scores[j] as number);
      }
      used.push([keys, list]);
    }
    if (used.length === 0) continue;
    for (let i = 0; i < n; i++) {
      const k = rowKeys[i] as number;
      if (k < scratch.length) out[PROFILE_VALUES * i + kind] = scratch[k] as number;
    }
    for (const [keys] of used) for (let j = 0; j < keys.length; j++) scratch[keys[j] as number] = 0;
  }
  return out;
}

function grow(key: number): void {
  const next = new Float64Array(Math.max(2 * scratch.length, key + 1));
  next.set(scratch);
  scratch = next;
}

/**
 * Keys for string ids, for callers without an item table (training): `rowKeys` of the rows and a
 * `keysOf` that numbers list ids the same way.
 */
export function keyedBy(ids: readonly string[]): {
  rowKeys: Int32Array;
  keysOf(list: ScoredList): Int32Array;
} {
  const index = new Map<string, number>();
  const key = (id: string): number => {
    let k = index.get(id);
    if (k === undefined) index.set(id, (k = index.size));
    return k;
  };
  return {
    rowKeys: Int32Array.from(ids, key),
    keysOf: (list) => Int32Array.from(list.ids, key),
  };
}
