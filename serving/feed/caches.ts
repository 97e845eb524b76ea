/**
 * What the feed service keeps in memory between requests, and the reads that fill it.
 *
 * Per batch version (`VersionState`): the item table (items as numbers with their catalog facts,
 * popularity and neighbour lists as columns), the overall popular list, the categories whose
 * popularity was read, the newest `NEIGHBOUR_CACHE_LISTS` neighbour lists and the newest
 * `userCache` users' batch candidates. A version's lists never change, so they are read once; a
 * new version (or a table past `ITEM_TABLE_LIMIT` items) starts a new state, and a request keeps
 * the state it started with even if the version moves meanwhile.
 *
 * Across versions: trending lists (reused for `TRENDING_CACHE_MS`), and catalog facts, which the
 * item table holds with the time they were read. Entries changed through `CatalogStore` are
 * dropped at once (`itemsChanged`); the TTL (`catalogTtlMs`) only bounds staleness when a change
 * was never announced. Facts past their TTL are used as they are and re-read in the background,
 * once however many requests ask; each item's TTL is shortened by up to half, by a fixed
 * fraction of its own, so items read together do not expire together.
 *
 * @example
 *   const caches = new FeedCaches({ candidates, catalog, trending }, config, log);
 *   const state = caches.stateFor(version);
 *   const overall = await caches.overall(state);
 */
import type { Config, Logger } from '../../core/index.js';
import type { CandidateStore } from '../../store/candidates.js';
import type { CatalogStore } from '../../store/catalog.js';
import type { OnlineNeighbourStore } from '../../store/online-neighbours.js';
import type { TrendingStore } from '../../store/trending.js';
import type { NewItemsStore } from '../../store/new-items.js';
import { ITEM_TABLE_LIMIT, ItemTable } from '../item-table.js';
import { popularityLog } from '../rank-features.js';
import { EMPTY_LIST, firstOf, mergeLists, type ScoredList } from '../scored-list.js';
import { blendWeightsOf, DEFAULT_BLEND, type BlendWeights } from '../blend.js';

/** Popular items read per version (a candidate source; training's `popularK`). */
export const POPULAR_K = 50;
/** How long a trending list is reused, ms (trending moves in buckets of a minute). */
const TRENDING_CACHE_MS = 1000;
/**
 * How often an item's online neighbour list is re-read in the background, ms (a random half of
 * it sooner). Each process re-reads every item it serves once per period, a cost of the catalog's
 * size rather than traffic: at 1 s the bench's 2,000 items were some 4,000 reads a second.
 */
const ONLINE_CACHE_MS = 5000;
/** Neighbour lists kept per process (oldest out first); at 100 neighbours some 6 KB each. */
const NEIGHBOUR_CACHE_LISTS = 20_000;

export interface VersionState {
  table: ItemTable;
  /** The overall popular list (a candidate source). */
  overall: Promise<ScoredList> | null;
  /** Per category number: its popularity list, being read or read. */
  categories: Map<number, Promise<void>>;
  /** Keys with a cached neighbour entry (EASE: -(key + 1)), oldest first, from `neighbourHead`. */
  neighbourKeys: number[];
  neighbourHead: number;
  /** Users' batch candidates (ids shared with the table), oldest first; `userCache` at most. */
  users: Map<string, ScoredList>;
  /** The version's blend weights, read with `overall`. */
  blend: BlendWeights;
}

/** An item's online neighbours: the list last read (null before the first read ends). */
interface OnlineEntry {
  at: number;
  value: ScoredList | null;
  reading: boolean;
  /** The first read, while in flight (requests wait for it; later reads they do not). */
  first?: Promise<ScoredList>;
}

export interface FeedStores {
  candidates: CandidateStore;
  online: OnlineNeighbourStore;
  catalog: CatalogStore;
  trending: TrendingStore;
  newItems: NewItemsStore;
}

export class FeedCaches {
  readonly #stores: FeedStores;
  readonly #log: Logger;
  readonly #catalogTtlMs: number;
  readonly #userCacheSize: number;
  readonly #trendWindow: number;
  /** Online neighbours read per item (as many as the batch keeps, `neighboursPerItem`). */
  readonly #onlineK: number;
  readonly #trending = new Map<string, { at: number; list: Promise<ScoredList> }>();
  readonly #newItems = new Map<string, { at: number; list: Promise<string[]> }>();
  readonly #online = new Map<string, OnlineEntry>();
  /** Per item, its batch and online lists merged, and the two lists they came from. */
  readonly #merged = new Map<
    string,
    { batch: ScoredList | undefined; online: ScoredList; list: ScoredList }
  >();
  #state: VersionState | null = null;
  /** The last overall popular list read, with the table of its version (the fallback feed's). */
  #lastPopular: { list: ScoredList; table: ItemTable } | null = null;
  /** The last overall trending list read (the fallback feed's before any batch). */
  #lastTrending: ScoredList | null = null;

  constructor(stores: FeedStores, config: Readonly<Config>, log: Logger) {
    this.#stores = stores;
    this.#log = log;
    this.#catalogTtlMs = config.serving.catalogTtlMs;
    this.#userCacheSize = config.serving.userCache;
    this.#trendWindow = Math.max(...config.trending.windowsSec);
    this.#onlineK = config.batch.neighboursPerItem;
  }

  /** The state of `version`, started anew when the version moved or the table is full. */
  stateFor(version: number | null): VersionState {
    const current = this.#state;
    if (
      current === null ||
      current.table.version !== version ||
      current.table.size > ITEM_TABLE_LIMIT
    ) {
      this.#state = {
        table: new ItemTable(version),
        overall: null,
        categories: new Map(),
        neighbourKeys: [],
        neighbourHead: 0,
        users: new Map(),
        blend: DEFAULT_BLEND,
      };
    }
    return this.#state as VersionState;
  }

  /** A user's cached batch candidates of the current state, if any. */
  cachedUser(userId: string): ScoredList | undefined {
    return this.#state?.users.get(userId);
  }

  /** Catalog entries changed: their facts are read again before use (all, without ids). */
  itemsChanged(itemIds?: readonly string[]): void {
    this.#state?.table.forgetFacts(itemIds);
  }

  /** The version's overall popular list (first `POPULAR_K`) and `state.blend`; failures not kept. */
  overall(state: VersionState): Promise<ScoredList> {
    if (state.overall === null) {
      const [store, version] = [this.#stores.candidates, state.table.version as number];
      const read = Promise.all([store.popular(null, version), store.meta(version)]).then(
        ([list, meta]) => {
          state.blend = blendWeightsOf(meta);
          this.#log.info({ version, blend: state.blend }, 'blend weights of the version read');
          notePopularity(state.table, list);
          const first = firstOf(list, POPULAR_K);
          this.#lastPopular = { list: first, table: state.table };
          return first;
        },
      );
      read.catch(() => {
        if (state.overall === read) state.overall = null;
      });
      state.overall = read;
    }
    return state.overall;
  }

  /**
   * What a feed falls back to when Redis fails it (`fallbackFeed`), from memory: the last overall
   * popular list read (of whichever version), or before any batch the last overall trending
   * list, with the item table that knows their facts. Null before either was read.
   */
  fallbackList(): { list: ScoredList; table: ItemTable; source: 'popularity' | 'trending' } | null {
    if (this.#lastPopular) return { ...this.#lastPopular, source: 'popularity' };
    if (this.#lastTrending && this.#state)
      return { list: this.#lastTrending, table: this.#state.table, source: 'trending' };
    return null;
  }

  /** Reads a category's popularity into the table, once per version. */
  categoryPopularity(state: VersionState, category: number): Promise<void> {
    let hit = state.categories.get(category);
    if (!hit) {
      const { table } = state;
      hit = this.#stores.candidates
        .categoryPopularity(table.categories[category] as string, table.version as number)
        .then((list) => {
          notePopularity(table, list);
          table.popularityRead[category] = 1;
        });
      hit.catch(() => state.categories.delete(category));
      state.categories.set(category, hit);
    }
    return hit;
  }

  /**
   * Catalog facts of `n` keys into the table: keys never read (or forgotten) are read now, in
   * one pipelined round trip the caller waits for; keys past their TTL are re-read in the
   * background (module comment).
   */
  async readFacts(table: ItemTable, keys: ArrayLike<number>, n: number, now: number) {
    let missing: number[] | null = null;
    let stale: number[] | null = null;
    for (let i = 0; i < n; i++) {
      const k = keys[i] as number;
      const at = table.readAt[k] as number;
      if (at === 0) (missing ??= []).push(k);
      else if (now - at >= this.#catalogTtlMs - this.#ttlSpread(k) && table.refreshing[k] === 0) {
        table.refreshing[k] = 1;
        (stale ??= []).push(k);
      }
    }
    if (stale !== null) {
      const refresh = stale;
      this.#fetchFacts(table, refresh, now)
        .catch((err: unknown) =>
          this.#log.warn(
            { err: (err as Error).message },
            'catalog refresh failed; retried on next use',
          ),
        )
        .finally(() => {
          for (const k of refresh) table.refreshing[k] = 0;
        });
    }
    if (missing !== null) await this.#fetchFacts(table, [...new Set(missing)], now);
  }

  /** The `k` trending items overall (`category` null) or of one category, reused for a second. */
  trending(category: string | null, k: number, now: number): Promise<ScoredList> {
    const key = `${category ?? ''}|${k}`;
    const hit = this.#trending.get(key);
    if (hit && now - hit.at < TRENDING_CACHE_MS) return hit.list;
    const list = this.#stores.trending.top(this.#trendWindow, category, k).then((top) => {
      const read = {
        ids: top.map(([id]) => id),
        scores: Float64Array.from(top, ([, count]) => count),
      };
      if (category === null) this.#lastTrending = read;
      return read;
    });
    list.catch(() => this.#trending.delete(key));
    this.#trending.set(key, { at: now, list });
    // Bounded: one entry per category ever asked for (categories are few).
    if (this.#trending.size > 10_000) this.#trending.clear();
    return list;
  }

  /** The newest `k` items created since `since`, overall or of one category, reused for a second. */
  newItems(category: string | null, since: number, k: number, now: number): Promise<string[]> {
    const key = `${category ?? ''}|${k}`;
    const hit = this.#newItems.get(key);
    if (hit && now - hit.at < TRENDING_CACHE_MS) return hit.list;
    const list = this.#stores.newItems.read(category, since, k);
    list.catch(() => this.#newItems.delete(key));
    this.#newItems.set(key, { at: now, list });
    if (this.#newItems.size > 10_000) this.#newItems.clear();
    return list;
  }

  /**
   * A user's batch candidates from a read of the store, kept for this user's next request in
   * this version (`userCache` users, oldest out first). The ids kept are the table's strings.
   */
  async userCandidates(
    state: VersionState,
    userId: string,
    read: Promise<ScoredList>,
    onMiss?: () => void,
  ): Promise<ScoredList> {
    const decoded = await read;
    const { table } = state;
    if (this.#userCacheSize === 0 || table.version === null) return decoded;
    const keys = table.keysOf(decoded);
    const list: ScoredList = {
      ids: Array.from(keys, (k) => table.ids[k] as string),
      scores: decoded.scores,
    };
    table.setKeys(list, keys);
    state.users.delete(userId);
    state.users.set(userId, list);
    if (state.users.size > this.#userCacheSize) {
      state.users.delete(state.users.keys().next().value as string);
    }
    onMiss?.();
    return list;
  }

  /**
   * Co-visitation neighbours (or, with `kind` 'ease', EASE weights) of each item; items without
   * any are absent. Kept in the version's table (the newest NEIGHBOUR_CACHE_LISTS lists of both
   * kinds, and the absence of a list too); misses take one round trip.
   */
  async neighbours(
    itemIds: readonly string[],
    state: VersionState,
    kind: 'neighbours' | 'ease' = 'neighbours',
  ): Promise<Map<string, ScoredList>> {
    const out = new Map<string, ScoredList>();
    if (itemIds.length === 0) return out;
    const { table } = state;
    const column = table[kind];
    let missing: string[] | null = null;
    for (const id of itemIds) {
      const hit = column[table.intern(id)];
      if (hit === undefined) (missing ??= []).push(id);
      else if (hit !== null) out.set(id, hit);
    }
    if (missing === null) return out;
    const version = table.version as number;
    const store = this.#stores.candidates;
    const lists = await Promise.all(
      missing.map((id) =>
        kind === 'ease' ? store.ease(id, version) : store.neighbours(id, version),
      ),
    );
    missing.forEach((id, i) => {
      const list = lists[i] as ScoredList;
      const k = table.intern(id);
      if (column[k] === undefined) {
        column[k] = list.ids.length > 0 ? list : null;
        // EASE entries as -(k + 1), so one queue bounds both kinds.
        remember(state, kind === 'ease' ? -k - 1 : k);
      }
      if (list.ids.length > 0) out.set(id, list);
    });
    return out;
  }

  /**
   * The online co-visitation neighbours of each item (`store/online-neighbours.ts`); items without
   * any are absent. A list read once is used as it is from then on and re-read in the background
   * when older than ONLINE_CACHE_MS (once, however many requests ask), so only an item's first
   * read makes a request wait. Synchronous when every list is in memory.
   */
  onlineNeighbours(
    itemIds: readonly string[],
    now: number,
  ): Map<string, ScoredList> | Promise<Map<string, ScoredList>> {
    const out = new Map<string, ScoredList>();
    let waits: Promise<void>[] | null = null;
    for (const id of itemIds) {
      let entry = this.#online.get(id);
      if (entry === undefined) {
        // Bounded: entries of items not asked for again are dropped wholesale.
        if (this.#online.size > 100_000) this.#online.clear();
        entry = { at: -Infinity, value: null, reading: false };
        this.#online.set(id, entry);
      }
      if (now - entry.at >= ONLINE_CACHE_MS && !entry.reading) this.#readOnline(id, entry, now);
      if (entry.value !== null) {
        if (entry.value.ids.length > 0) out.set(id, entry.value);
      } else if (entry.first) {
        const first = entry.first;
        (waits ??= []).push(
          first.then((list) => {
            if (list.ids.length > 0) out.set(id, list);
          }),
        );
      }
    }
    return waits === null ? out : Promise.all(waits).then(() => out);
  }

  #readOnline(id: string, entry: OnlineEntry, now: number): void {
    entry.reading = true;
    // The entry is updated before anyone waiting on the first read resumes.
    const settled = this.#stores.online.read([id], this.#onlineK).then(
      (r) => {
        const list = r[0] ?? EMPTY_LIST;
        entry.value = list;
        // Less up to half at random, so items read together are not read again together.
        entry.at = now - Math.random() * (ONLINE_CACHE_MS / 2);
        entry.reading = false;
        entry.first = undefined;
        return list;
      },
      (err: unknown) => {
        this.#log.warn(
          { err: (err as Error).message, itemId: id },
          'online neighbours read failed',
        );
        entry.reading = false;
        entry.first = undefined;
        return EMPTY_LIST;
      },
    );
    if (entry.value === null) entry.first = settled;
  }

  /**
   * Batch and online neighbours of each item as one list (`mergeLists`; the batch list alone
   * where there are no online ones). A merge is kept until either list it came from changes.
   */
  mergeNeighbours(
    batch: ReadonlyMap<string, ScoredList>,
    online: ReadonlyMap<string, ScoredList>,
  ): ReadonlyMap<string, ScoredList> {
    if (online.size === 0) return batch;
    const out = new Map(batch);
    for (const [item, list] of online) {
      const fromBatch = batch.get(item);
      const hit = this.#merged.get(item);
      if (hit && hit.batch === fromBatch && hit.online === list) {
        out.set(item, hit.list);
        continue;
      }
      const merged = fromBatch ? mergeLists(fromBatch, list) : list;
      // Bounded like the online lists: entries of items not asked for again go wholesale.
      if (this.#merged.size > 100_000) this.#merged.clear();
      this.#merged.set(item, { batch: fromBatch, online: list, list: merged });
      out.set(item, merged);
    }
    return out;
  }

  async #fetchFacts(table: ItemTable, keys: number[], now: number): Promise<void> {
    const forgets = table.forgets;
    const found = await this.#stores.catalog.lookup(keys.map((k) => table.ids[k] as string));
    // Changed while the read was in flight: the answer may predate the change.
    const at = table.forgets === forgets ? now : 0;
    keys.forEach((k, j) => table.setFacts(k, at, found[j] ?? null));
  }

  #ttlSpread(k: number): number {
    return (this.#catalogTtlMs / 2) * (((k * 2654435761) >>> 0) / 2 ** 32);
  }
}

/** Records a neighbour list's key, dropping the oldest beyond NEIGHBOUR_CACHE_LISTS. */
function remember(state: VersionState, entry: number): void {
  const { table } = state;
  state.neighbourKeys.push(entry);
  if (state.neighbourKeys.length - state.neighbourHead > NEIGHBOUR_CACHE_LISTS) {
    const old = state.neighbourKeys[state.neighbourHead++] as number;
    if (old < 0) table.ease[-old - 1] = undefined;
    else table.neighbours[old] = undefined;
    if (state.neighbourHead > NEIGHBOUR_CACHE_LISTS) {
      state.neighbourKeys.splice(0, state.neighbourHead);
      state.neighbourHead = 0;
    }
  }
}

/** Records popularity values (first one wins: an item's value is the same in every list). */
function notePopularity(table: ItemTable, list: ScoredList): void {
  for (let i = 0; i < list.ids.length; i++) {
    const k = table.intern(list.ids[i] as string);
    const known = table.popularityLog[k] as number;
    if (known !== known) table.popularityLog[k] = popularityLog(list.scores[i] as number);
  }
}
