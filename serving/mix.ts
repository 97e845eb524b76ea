/**
 * The pure half of building a feed: mixing the candidate sources, exclusions, impression
 * fatigue and the diversity rule. No I/O here (the feed service reads Redis and passes the
 * lists in), so every rule is unit-tested on in-memory inputs.
 *
 * The mix follows the one training builds (`batch/rerank.ts`, step 3), so the reranker scores
 * the same kind of candidate lists it learnt on:
 *   - `batch`: the user's precomputed candidates, with their batch score;
 *   - `covis`: co-visitation neighbours of the user's most recent items (newest first): each
 *     list scaled to sum 1 (the share of the item's co-visits going to that neighbour), times
 *     0.8^position of the recent item ({@link covisDivisor}), summed over the recent items;
 *   - `trending`: trending items (counts) overall and in the user's top categories;
 *   - `popularity`: the most popular items overall (decayed interaction counts).
 * An item proposed by several sources keeps each source's (best) score.
 *
 * Candidates are columns ({@link CandidateRows}), not an object per candidate: a feed request
 * mixes some 600 proposals into 200 rows, and one object (plus a scores object) per row was most
 * of the serving CPU and garbage at thousands of feeds a second.
 *
 * @example
 *   const rows = mixCandidates({ batch, recent, neighbours, trending, popular }, 200);
 *   keepRows(rows, (i) => !bought.has(rows.ids[i] as string));
 */
import { ItemTable } from './item-table.js';
import { descendingOrder } from './order.js';
import type { ScoredList } from './scored-list.js';
import { SOURCES, type CandidateSource } from './rank-features.js';

export interface MixInput {
  /** Batch candidates, best first. */
  batch: ScoredList;
  /** The user's recent items, newest first (only those whose neighbours count). */
  recent: readonly string[];
  /** Co-visitation neighbours per recent item, best first. */
  neighbours: ReadonlyMap<string, ScoredList>;
  /** Trending lists (overall and per category), each best first. */
  trending: readonly ScoredList[];
  /** Popular items overall, best first. */
  popular: ScoredList;
}

/** Number of candidate sources; the stride of {@link CandidateRows.scores}. */
export const SOURCE_COUNT = SOURCES.length;

/**
 * Candidates as columns; row i is candidate i. Owned by one request: {@link keepRows} compacts
 * it in place.
 */
export interface CandidateRows {
  n: number;
  ids: string[];
  /** The item's key in the {@link ItemTable} the rows were mixed with. */
  keys: Int32Array;
  /** Bit s is set when `SOURCES[s]` proposed the candidate. */
  proposed: Uint8Array;
  /** The score `SOURCES[s]` gave candidate i, at `i * SOURCE_COUNT + s` (0 where not proposed). */
  scores: Float64Array;
  /**
   * Where candidate i stands among the candidates `SOURCES[s]` proposed, in that source's score
   * order (float32 precision, equal scores in the order proposed), at `i * SOURCE_COUNT + s`; read only
   * where proposed. Increasing, not contiguous, once `keepRows` dropped some. Features take
   * their per-source ranks from it instead of sorting again (`RankRows.sourcePos`).
   */
  sourcePos: Int32Array;
}

/**
 * The source a candidate is shown as coming from (served log, `FeedItem.source`): the first of
 * `SOURCES` (batch, covis, trending, popularity) that proposed it.
 */
export function shownSource(rows: CandidateRows, i: number): CandidateSource {
  const bits = rows.proposed[i] as number;
  for (let s = 0; s < SOURCE_COUNT; s++) if (bits & (1 << s)) return SOURCES[s] as CandidateSource;
  throw new RangeError(`candidate ${i} has no source`);
}

// Per-slot scratch shared by every request of the process (mixing is synchronous, so no request
// sees another's), grown to the largest input seen. Deduplication uses the item table's keys
// and its per-key stamps: typed-array reads instead of a map per request.
let best = new Float64Array(0);
let bits = new Uint8Array(0);
let values = new Float64Array(0);
let order = new Uint32Array(0);
let moved = new Int32Array(0);
let slotKeys = new Int32Array(0);
let rowOfSlot = new Int32Array(0);
const groupStarts = new Uint32Array(33);
let rankStarts = new Uint32Array(0);
let byRank = new Int32Array(0);
let bySource = new Int32Array(0);
const sourceLength = new Int32Array(SOURCE_COUNT);
const TAKEN = 0x80;
/** The co-visitation source: its scores sum over the recent items (the others keep the best). */
const COVIS = SOURCES.indexOf('covis');
/** `ItemTable.slotOf` of an excluded item (slots are < 2^32 - 1). */
const EXCLUDED = 0xffffffff;

/** Weight of the recent item at position p (0 = newest) among the co-visitation seeds: 0.8^p. */
const SEED_DECAY = 0.8;

/**
 * What a co-visitation neighbour's score is divided by, for the list of the recent item at
 * `position`: the list's sum over the seed's weight, so each list counts as the seed's share of
 * the co-visits (P(neighbour | seed) over the neighbours kept) and newer seeds count more.
 * Serving and training (`batch/rerank.ts`) both score with it. On the MovieLens replay this
 * ranked better than the best neighbour scaled to 1 and 1 / (1 + position) (bench/README.md).
 */
export function covisDivisor(scores: ArrayLike<number>, position: number): number {
  let sum = 0;
  for (let i = 0; i < scores.length; i++) sum += scores[i] as number;
  return sum > 0 ? sum / SEED_DECAY ** position : 1;
}

/**
 * Mixes the sources into at most `cap` distinct candidates.
 *
 * Steps: (1) each source's ranked list with the best score per item, except co-visitation,
 * whose lists sum their position-discounted scores per item (trending lists by count); (2) scores of every proposal
 * are kept for every item, whether or not it survives the cap; (3) which items survive the cap
 * is decided round-robin over the sources by rank, so a long batch list cannot
 * crowd out the real-time sources (a user who just touched items gets their neighbours ranked).
 *
 * `table` gives each item its key (`rows.keys`); the feed service passes its batch version's
 * table, whose columns then hold the rows' catalog facts and popularity. Items whose keys are in
 * `excluded` (what the user must not be shown again) are left out before the cap, so they take
 * no place another candidate could have had.
 */
export function mixCandidates(
  input: MixInput,
  cap: number,
  table: ItemTable = new ItemTable(null),
  excluded: readonly number[] = [],
): CandidateRows {
  let total = input.batch.ids.length + input.popular.ids.length;
  for (const item of input.recent) total += input.neighbours.get(item)?.ids.length ?? 0;
  for (const list of input.trending) total += list.ids.length;
  if (bits.length < total) {
    best = new Float64Array(SOURCE_COUNT * total * 2);
    bits = new Uint8Array(total * 2);
  }
  // Keys first: interning may grow the table's columns, which the loop below holds.
  const keyLists: Int32Array[] = [table.keysOf(input.batch)];
  for (const item of input.recent) {
    const nb = input.neighbours.get(item);
    if (nb) keyLists.push(table.keysOf(nb));
  }
  for (const list of input.trending) keyLists.push(table.keysOf(list));
  keyLists.push(table.keysOf(input.popular));
  if (++table.stamp === 0x100000000) {
    table.stamp = 1;
    table.stampOf.fill(0);
  }
  const stamp = table.stamp;
  const stampOf = table.stampOf;
  const slotOf = table.slotOf;
  // An excluded key is stamped with the slot EXCLUDED: every list below skips it.
  for (const g of excluded) {
    stampOf[g] = stamp;
    slotOf[g] = EXCLUDED;
  }

  // (1) + (2): one slot per distinct item (its key in `slotKeys`); per source s, the slots it
  // proposed, at `bySource[s * total ..]` (`sourceLength[s]` of them).
  if (slotKeys.length < total) {
    slotKeys = new Int32Array(total * 2);
    rowOfSlot = new Int32Array(total * 2);
    bySource = new Int32Array(SOURCE_COUNT * total * 2);
  }
  const stride = slotKeys.length;
  let slots = 0;
  sourceLength.fill(0);
  let at = 0;
  const addList = (s: number, list: ScoredList, divide: number): void => {
    const keys = keyLists[at++] as Int32Array;
    const n = list.ids.length;
    const bit = 1 << s;
    for (let i = 0; i < n; i++) {
      const score = (list.scores[i] as number) / divide;
      const g = keys[i] as number;
      let k: number;
      if (stampOf[g] !== stamp) {
        stampOf[g] = stamp;
        k = slots++;
        slotOf[g] = k;
        slotKeys[k] = g;
        bits[k] = 0;
      } else {
        k = slotOf[g] as number;
        if (k === EXCLUDED) continue;
      }
      const cell = k * SOURCE_COUNT + s;
      if (((bits[k] as number) & bit) === 0) {
        bits[k] = (bits[k] as number) | bit;
        best[cell] = score;
        const m = sourceLength[s] as number;
        bySource[s * stride + m] = k;
        sourceLength[s] = m + 1;
      } else if (s === COVIS) best[cell] = (best[cell] as number) + score;
      else if (score > (best[cell] as number)) best[cell] = score;
    }
  };
  addList(0, input.batch, 1);
  input.recent.forEach((item, pos) => {
    const nb = input.neighbours.get(item);
    if (nb) addList(1, nb, covisDivisor(nb.scores, pos));
  });
  for (const list of input.trending) addList(2, list, 1);
  addList(3, input.popular, 1);

  rankWithinSources(stride);

  // (3) Round-robin by rank over the sources.
  let longest = 0;
  for (let s = 0; s < SOURCE_COUNT; s++) longest = Math.max(longest, sourceLength[s] as number);
  const size = Math.min(cap, slots);
  // The columns share one buffer: one allocation (off the V8 heap) per feed instead of four.
  const buffer = new ArrayBuffer(
    size * SOURCE_COUNT * 8 + size * SOURCE_COUNT * 4 + size * 4 + size,
  );
  const rows: CandidateRows = {
    n: 0,
    ids: [],
    scores: new Float64Array(buffer, 0, size * SOURCE_COUNT),
    sourcePos: new Int32Array(buffer, size * SOURCE_COUNT * 8, size * SOURCE_COUNT),
    keys: new Int32Array(buffer, size * SOURCE_COUNT * 12, size),
    proposed: new Uint8Array(buffer, size * SOURCE_COUNT * 12 + size * 4, size),
  };
  for (let rank = 0; rank < longest && rows.n < size; rank++) {
    for (let s = 0; s < SOURCE_COUNT && rows.n < size; s++) {
      if (rank >= (sourceLength[s] as number)) continue;
      const k = bySource[s * stride + rank] as number;
      if (((bits[k] as number) & TAKEN) !== 0) continue;
      const b = bits[k] as number;
      bits[k] = b | TAKEN;
      const i = rows.n++;
      rowOfSlot[k] = i;
      const g = slotKeys[k] as number;
      rows.keys[i] = g;
      rows.ids.push(table.ids[g] as string);
      rows.proposed[i] = b;
      for (let t = 0; t < SOURCE_COUNT; t++)
        rows.scores[i * SOURCE_COUNT + t] =
          b & (1 << t) ? (best[k * SOURCE_COUNT + t] as number) : 0;
    }
  }
  // Each source's rows in its order (the order of its slots above).
  for (let s = 0; s < SOURCE_COUNT; s++) {
    let p = 0;
    for (let r = 0; r < (sourceLength[s] as number); r++) {
      const k = bySource[s * stride + r] as number;
      if (((bits[k] as number) & TAKEN) !== 0)
        rows.sourcePos[(rowOfSlot[k] as number) * SOURCE_COUNT + s] = p++;
    }
  }
  return rows;
}

/**
 * Ranks each source's slots (`bySource`) by score descending, ties in the order first proposed
 * (`descendingOrder`). Lists usually arrive in that order already, so a linear check saves most
 * sorts.
 */
function rankWithinSources(stride: number): void {
  for (let s = 0; s < SOURCE_COUNT; s++) {
    const base = s * stride;
    const m = sourceLength[s] as number;
    let sorted = true;
    for (let i = 1; i < m && sorted; i++) {
      sorted =
        (best[(bySource[base + i - 1] as number) * SOURCE_COUNT + s] as number) >=
        (best[(bySource[base + i] as number) * SOURCE_COUNT + s] as number);
    }
    if (sorted) continue;
    if (values.length < m) {
      values = new Float64Array(m * 2);
      order = new Uint32Array(m * 2);
      moved = new Int32Array(m * 2);
    }
    for (let i = 0; i < m; i++) {
      const k = bySource[base + i] as number;
      values[i] = best[k * SOURCE_COUNT + s] as number;
      moved[i] = k;
    }
    descendingOrder(values, m, order);
    for (let r = 0; r < m; r++) bySource[base + r] = moved[order[r] as number] as number;
  }
}

/**
 * Where each row goes in the matrix the model scores: rows grouped by the sources that proposed
 * them and by whether the catalog knows the item (`known`, per item key), and within a group by
 * rank in the group's first source (two stable counting passes). A tree ensemble scores each row
 * on its own, so the order changes no score; but rows that take similar paths through the trees
 * then run back to back, which the CPU's branch predictor rewards (the ONNX run takes about a
 * third less time).
 */
export function modelRowOrder(
  rows: CandidateRows,
  known: ArrayLike<number>,
  out: Uint32Array,
): Uint32Array {
  const n = rows.n;
  if (out.length < n) throw new RangeError(`order buffer holds ${out.length}, need ${n}`);
  const group = (i: number): number =>
    ((rows.proposed[i] as number) & 0x0f) | ((known[rows.keys[i] as number] ? 1 : 0) << 4);
  // The row's rank in the first source that proposed it.
  const rank = (i: number): number => {
    const b = rows.proposed[i] as number;
    return rows.sourcePos[i * SOURCE_COUNT + (31 - Math.clz32(b & -b))] as number;
  };
  // Pass 1: rows by rank.
  let top = 0;
  for (let i = 0; i < n; i++) top = Math.max(top, rank(i));
  if (rankStarts.length < top + 2) rankStarts = new Uint32Array(2 * (top + 2));
  if (byRank.length < n) byRank = new Int32Array(2 * n);
  rankStarts.fill(0, 0, top + 2);
  for (let i = 0; i < n; i++) rankStarts[rank(i) + 1] = (rankStarts[rank(i) + 1] as number) + 1;
  for (let r = 1; r <= top + 1; r++) {
    rankStarts[r] = (rankStarts[r] as number) + (rankStarts[r - 1] as number);
  }
  for (let i = 0; i < n; i++) {
    const r = rank(i);
    byRank[rankStarts[r] as number] = i;
    rankStarts[r] = (rankStarts[r] as number) + 1;
  }
  // Pass 2: by group, stable, so rank order holds within a group.
  const starts = groupStarts.fill(0);
  for (let i = 0; i < n; i++) starts[group(i) + 1] = (starts[group(i) + 1] as number) + 1;
  for (let g = 1; g <= 32; g++) starts[g] = (starts[g] as number) + (starts[g - 1] as number);
  for (let j = 0; j < n; j++) {
    const i = byRank[j] as number;
    const g = group(i);
    out[i] = starts[g] as number;
    starts[g] = (starts[g] as number) + 1;
  }
  return out;
}

/**
 * Keeps the rows for which `keep(i)` is true, in order, compacting `rows` in place; `also`
 * arrays (aligned with the rows, e.g. their catalog entries) are compacted alongside.
 */
export function keepRows(
  rows: CandidateRows,
  keep: (i: number) => boolean,
  ...also: unknown[][]
): void {
  let w = 0;
  for (let r = 0; r < rows.n; r++) {
    if (!keep(r)) continue;
    if (w !== r) {
      rows.ids[w] = rows.ids[r] as string;
      rows.keys[w] = rows.keys[r] as number;
      rows.proposed[w] = rows.proposed[r] as number;
      for (let t = 0; t < SOURCE_COUNT; t++) {
        rows.scores[w * SOURCE_COUNT + t] = rows.scores[r * SOURCE_COUNT + t] as number;
        rows.sourcePos[w * SOURCE_COUNT + t] = rows.sourcePos[r * SOURCE_COUNT + t] as number;
      }
      for (const a of also) a[w] = a[r];
    }
    w++;
  }
  rows.n = w;
  rows.ids.length = w;
  for (const a of also) a.length = w;
}

/**
 * Impression fatigue: items shown to the user `threshold` times or more without an interaction
 * move after the others; both groups keep their order. Items in `interacted` (the user's recent
 * items) are never demoted, whatever the count says.
 */
export function demoteFatigued<T>(
  ranked: ArrayLike<T>,
  idOf: (c: T) => string,
  impressions: ReadonlyMap<string, number>,
  threshold: number,
  interacted: Iterable<string> = [],
): T[] {
  if (impressions.size === 0) return Array.prototype.slice.call(ranked) as T[];
  const touched = new Set(interacted);
  const fresh: T[] = [];
  const tired: T[] = [];
  for (let i = 0; i < ranked.length; i++) {
    const c = ranked[i] as T;
    const id = idOf(c);
    const n = impressions.get(id) ?? 0;
    if (n >= threshold && !touched.has(id)) tired.push(c);
    else fresh.push(c);
  }
  return fresh.concat(tired);
}

/**
 * The diversity rule: at most `maxPerCategory` items of one category in the first `top`
 * positions. Greedy: walk the ranked list; an item whose category is full is deferred (kept in
 * order) and placed after the top; if too few items qualify, the top is filled from the
 * deferred ones in order. Items of unknown category (null) are not limited. Only the first
 * `length` positions of the result are built (all by default).
 */
export function diversify<T, K>(
  ranked: ArrayLike<T>,
  categoryOf: (c: T) => K | null,
  maxPerCategory: number,
  top = 10,
  length = ranked.length,
): T[] {
  const head: T[] = [];
  const deferred: T[] = [];
  const perCategory = new Map<K, number>();
  let i = 0;
  for (; i < ranked.length && head.length < top; i++) {
    const c = ranked[i] as T;
    const cat = categoryOf(c);
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
  // Not enough variety to fill the top: the deferred ones fill it, best first; then the
  // deferred ones, then the rest in order.
  const out = head;
  for (let d = 0; d < deferred.length && out.length < length; d++) out.push(deferred[d] as T);
  for (; i < ranked.length && out.length < length; i++) out.push(ranked[i] as T);
  if (out.length > length) out.length = Math.max(0, length);
  return out;
}
