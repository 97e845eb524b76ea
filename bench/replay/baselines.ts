/**
 * The baselines a client would build in an afternoon, learnt online on the same events as the
 * stack: they see the history prefix, then each replayed event in time order is first ranked
 * for, then learnt from (prequential).
 *
 * - `popularity`: items by how many events they had so far (every type counts 1).
 * - `covis`: co-visitation. Each event pairs its item with the items of the user's previous
 *   {@link BaselineOptions.window} events (both directions, +1 per pair); a user's list is the
 *   neighbours of their last {@link BaselineOptions.lastItems} distinct items, scores summed,
 *   the user's last items themselves left out, then popularity fills it to K.
 * - `*_new`: the same lists with every item the user already consumed left out. On a log
 *   without repeats (MovieLens) that is what a client would do; on e-commerce logs, where people
 *   return to items, the plain lists are the fair ones: both are reported.
 *
 * @example
 *   const pop = new PopularityCounter();
 *   pop.add('i1'); pop.add('i2'); pop.add('i2');
 *   pop.top(2, () => false); // ['i2', 'i1']
 */
import type { Outcome } from './metrics.js';

export interface BaselineOptions {
  k: number;
  /** Previous events of the same user an event is paired with. @default 3 */
  window: number;
  /** Distinct latest items of the user whose neighbours make the list. @default 3 */
  lastItems: number;
}

/**
 * Item counts kept sorted as they grow: `order` is by count descending; `blockStart[c]` is the
 * first position holding count c. Incrementing an item swaps it with the first item of its
 * count's block and moves the block start one on, so each add is O(1) and the order is always
 * ready for a top-K scan.
 */
export class PopularityCounter {
  readonly #order: string[] = [];
  readonly #pos = new Map<string, number>();
  readonly #count = new Map<string, number>();
  readonly #blockStart: number[] = [];

  add(item: string): void {
    let i = this.#pos.get(item);
    if (i === undefined) {
      i = this.#order.length;
      this.#order.push(item);
      this.#pos.set(item, i);
      this.#count.set(item, 0);
      if (this.#blockStart[0] === undefined || this.#blockStart[0] > i) this.#blockStart[0] = i;
    }
    const c = this.#count.get(item) as number;
    const j = this.#blockStart[c] as number;
    const other = this.#order[j] as string;
    this.#order[j] = item;
    this.#order[i] = other;
    this.#pos.set(other, i);
    this.#pos.set(item, j);
    this.#count.set(item, c + 1);
    this.#blockStart[c] = j + 1;
    if (this.#blockStart[c + 1] === undefined) this.#blockStart[c + 1] = j;
  }

  count(item: string): number {
    return this.#count.get(item) ?? 0;
  }

  get size(): number {
    return this.#order.length;
  }

  /** The `k` most counted items for which `skip` is false. */
  top(k: number, skip: (item: string) => boolean, out: string[] = []): string[] {
    for (const item of this.#order) {
      if (out.length >= k) break;
      if (!skip(item)) out.push(item);
    }
    return out;
  }
}

/** Per-user state both the baselines and the replay loop need. */
export interface UserTrail {
  consumed: Set<string>;
  /** Items of the user's events, oldest first (the last `window` are enough). */
  recent: string[];
}

export class Covisitation {
  readonly #pairs = new Map<string, Map<string, number>>();
  constructor(readonly window: number) {}

  /** Learns the event of `item` after the user's `recent` items. */
  add(item: string, recent: readonly string[]): void {
    const from = Math.max(0, recent.length - this.window);
    for (let i = from; i < recent.length; i++) {
      const other = recent[i] as string;
      if (other === item) continue;
      this.#bump(item, other);
      this.#bump(other, item);
    }
  }

  #bump(a: string, b: string): void {
    let m = this.#pairs.get(a);
    if (!m) this.#pairs.set(a, (m = new Map()));
    m.set(b, (m.get(b) ?? 0) + 1);
  }

  /** Top `k` neighbours of `seeds` (summed) for which `skip` is false, best first. */
  top(seeds: readonly string[], k: number, skip: (item: string) => boolean): string[] {
    const scores = new Map<string, number>();
    const seedSet = new Set(seeds);
    for (const s of seeds) {
      for (const [item, w] of this.#pairs.get(s) ?? []) {
        if (seedSet.has(item) || skip(item)) continue;
        scores.set(item, (scores.get(item) ?? 0) + w);
      }
    }
    // Selection of the k best (ties: first met), cheaper than sorting thousands of neighbours.
    const best: [string, number][] = [];
    for (const entry of scores) {
      if (best.length === k && entry[1] <= (best[k - 1] as [string, number])[1]) continue;
      let at = best.length;
      while (at > 0 && (best[at - 1] as [string, number])[1] < entry[1]) at--;
      best.splice(at, 0, entry);
      if (best.length > k) best.pop();
    }
    return best.map(([item]) => item);
  }
}

/** The distinct latest `n` items of a trail, newest first. */
export function lastDistinct(recent: readonly string[], n: number): string[] {
  const out: string[] = [];
  for (let i = recent.length - 1; i >= 0 && out.length < n; i--) {
    const item = recent[i] as string;
    if (!out.includes(item)) out.push(item);
  }
  return out;
}

export const BASELINES = ['popularity', 'popularity_new', 'covis', 'covis_new'] as const;
export type BaselineName = (typeof BASELINES)[number];

/** One event as the baselines see it. */
export interface BaselineEvent {
  user: string;
  item: string;
  nth: number;
  cold: boolean;
}

export interface BaselineResult {
  /** Per replayed event, in the order given. */
  outcomes: Outcome[];
  /** The list shown for each replayed event. */
  lists: string[][];
}

/**
 * Runs every baseline over `history` (learnt only) then `replay` (ranked, then learnt), in the
 * order given.
 */
export function runBaselines(
  history: readonly { user: string; item: string }[],
  replay: readonly BaselineEvent[],
  opts: BaselineOptions,
): Record<BaselineName, BaselineResult> {
  const pop = new PopularityCounter();
  const covis = new Covisitation(opts.window);
  const trails = new Map<string, UserTrail>();
  const trailOf = (user: string): UserTrail => {
    let t = trails.get(user);
    if (!t) trails.set(user, (t = { consumed: new Set(), recent: [] }));
    return t;
  };
  const learn = (user: string, item: string): void => {
    const t = trailOf(user);
    pop.add(item);
    covis.add(item, t.recent);
    t.consumed.add(item);
    t.recent.push(item);
    if (t.recent.length > Math.max(opts.window, 64)) t.recent.splice(0, t.recent.length - 64);
  };
  for (const e of history) learn(e.user, e.item);

  const results = Object.fromEntries(
    BASELINES.map((b) => [b, { outcomes: [], lists: [] }]),
  ) as unknown as Record<BaselineName, BaselineResult>;
  const never = (): boolean => false;
  for (const e of replay) {
    const t = trailOf(e.user);
    const consumed = (item: string): boolean => t.consumed.has(item);
    const seeds = lastDistinct(t.recent, opts.lastItems);
    const lists: Record<BaselineName, string[]> = {
      popularity: pop.top(opts.k, never),
      popularity_new: pop.top(opts.k, consumed),
      covis: fill(covis.top(seeds, opts.k, never), pop, opts.k, never),
      covis_new: fill(covis.top(seeds, opts.k, consumed), pop, opts.k, consumed),
    };
    for (const name of BASELINES) {
      const list = lists[name];
      const r = results[name];
      r.lists.push(list);
      const rank = list.indexOf(e.item);
      r.outcomes.push({
        rank: rank < 0 ? null : rank,
        nth: e.nth,
        cold: e.cold,
        source: null,
        shown: list.length,
        consumedShown: list.filter(consumed).length,
      });
    }
    learn(e.user, e.item);
  }
  return results;
}

/** `list` filled up to `k` from popularity, without repeats. */
function fill(
  list: string[],
  pop: PopularityCounter,
  k: number,
  skip: (item: string) => boolean,
): string[] {
  if (list.length >= k) return list;
  const have = new Set(list);
  return pop.top(k, (item) => have.has(item) || skip(item), list);
}
