/**
 * Exploration of new items: a new catalog item has no interactions, so no candidate source
 * proposes it until someone finds it some other way. A feed gives an expected `share` of its
 * slots (never the first {@link FIRST_EXPLORE_SLOT}) to new items the user has not consumed,
 * from the user's top category, else from the whole catalog; they are served with the source
 * `explore`, so the served log, the replay evaluator (hits by source) and Kibana tell what the
 * share costs and earns. The draw is seeded by the user and a time bucket
 * ({@link EXPLORE_ROTATE_MS}): repeated requests and live pushes within it show the same picks
 * in the same places instead of reshuffling the feed on every change.
 *
 * @example
 *   const rand = seededRandom(`${userId}:${Math.floor(now / EXPLORE_ROTATE_MS)}`);
 *   const count = exploreCount(0.05, items.length, rand());
 *   const shown = insertExplored(items, pick(pool, count, rand), rand);
 */

import type { Config } from '../core/index.js';
import type { SessionFeatures } from '../store/session-features.js';
import type { FeedCaches } from './feed/caches.js';
import type { ItemTable } from './item-table.js';

/** Slots before this one always hold ranked items. */
export const FIRST_EXPLORE_SLOT = 2;
/** How long a user keeps the same draw, ms. */
export const EXPLORE_ROTATE_MS = 60_000;
/** New items considered per request (the newest of the pool). */
export const EXPLORE_POOL = 50;

export interface ExploredItem {
  itemId: string;
  score: number;
  source: string;
  categoryL1: string | null;
}

/** A generator of floats in [0, 1) from a string seed (FNV-1a, then mulberry32). */
export function seededRandom(seed: string): () => number {
  let h = 0x811c9dc5;
  for (let i = 0; i < seed.length; i++) {
    h ^= seed.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  let a = h >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Slots to explore in a feed of `length` items: `share` of the explorable slots, the fraction
 * rounded up with probability equal to it (`u` uniform in [0, 1)), so the expected share is exact.
 */
export function exploreCount(share: number, length: number, u: number): number {
  const slots = Math.max(0, length - FIRST_EXPLORE_SLOT);
  const expected = share * slots;
  return Math.min(slots, Math.floor(expected) + (u < expected - Math.floor(expected) ? 1 : 0));
}

/** `count` distinct items of `pool` drawn uniformly (a partial Fisher-Yates shuffle of a copy). */
export function pick(pool: readonly string[], count: number, rand: () => number): string[] {
  const copy = pool.slice();
  const n = Math.min(count, copy.length);
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(rand() * (copy.length - i));
    [copy[i], copy[j]] = [copy[j] as string, copy[i] as string];
  }
  return copy.slice(0, n);
}

/**
 * Puts `picked` into `items` at random slots from {@link FIRST_EXPLORE_SLOT} on, keeping the
 * length: the ranked items after each inserted one move down and the last ones fall off. An
 * explored item takes the score of the ranked item it displaced, so scores stay in order.
 */
export function insertExplored<T extends ExploredItem>(
  items: readonly T[],
  picked: readonly Omit<T, 'score'>[],
  rand: () => number,
): T[] {
  const length = items.length;
  const slots = new Set<number>();
  const room = length - FIRST_EXPLORE_SLOT;
  const count = Math.min(picked.length, Math.max(0, room));
  while (slots.size < count) slots.add(FIRST_EXPLORE_SLOT + Math.floor(rand() * room));
  const out: T[] = [];
  let ranked = 0;
  let explored = 0;
  for (let slot = 0; slot < length; slot++) {
    const next = items[ranked] as T;
    if (slots.has(slot)) {
      out.push({ ...(picked[explored++] as Omit<T, 'score'>), score: next.score } as T);
    } else {
      out.push(next);
      ranked++;
    }
  }
  return out;
}

/**
 * A ranked feed with new items the user has not consumed in an expected `exploreShare` of its
 * slots: from the user's top category, and from the whole catalog when that has too few.
 */
export async function exploreNewItems<T extends ExploredItem>(
  ctx: { config: Readonly<Config>; caches: FeedCaches },
  userId: string,
  session: SessionFeatures | null,
  table: ItemTable,
  items: T[],
  now: number,
): Promise<T[]> {
  const { exploreShare, newItemAgeMs } = ctx.config.serving;
  if (exploreShare <= 0) return items;
  const rand = seededRandom(`${userId}:${Math.floor(now / EXPLORE_ROTATE_MS)}`);
  const count = exploreCount(exploreShare, items.length, rand());
  if (count === 0) return items;
  const skip = new Set(items.map((i) => i.itemId));
  for (const list of [session?.consumed, session?.purchased, session?.recent]) {
    for (const id of list ?? []) skip.add(id);
  }
  const top = session?.affinities[0]?.[0] ?? null;
  const chosen: string[] = [];
  for (const category of top === null ? [null] : [top, null]) {
    const ids = await ctx.caches.newItems(category, now - newItemAgeMs, EXPLORE_POOL, now);
    const keys = ids.filter((id) => !skip.has(id)).map((id) => table.intern(id));
    await ctx.caches.readFacts(table, keys, keys.length, now);
    const pool = keys.filter((k) => table.known[k] === 1 && table.available[k] === 1);
    for (const id of pick(
      pool.map((k) => table.ids[k] as string),
      count - chosen.length,
      rand,
    )) {
      chosen.push(id);
      skip.add(id);
    }
    if (chosen.length >= count) break;
  }
  const picked = chosen.map((itemId) => {
    const c = table.category[table.intern(itemId)] as number;
    return { itemId, source: 'explore', categoryL1: table.categories[c] ?? null };
  });
  return insertExplored(items, picked as Omit<T, 'score'>[], rand);
}
