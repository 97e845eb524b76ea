/**
 * Items as dense numbers, with what serving knows about each kept in columns.
 *
 * A feed request touches some 600 item ids (the user's batch candidates, neighbours, trending
 * and popular lists) and reads each one's catalog facts and popularity. Looked up by string,
 * those reads were the largest share of a request's JavaScript: hashing and comparing fresh
 * strings in maps of thousands of entries, and an object per catalog entry for the GC to
 * trace. Here an id is interned once into a number (its key), and everything else is a
 * typed-array read at that key:
 *   - catalog facts (in the catalog, available, price, createdAt, category), each with the time
 *     it was read, so the feed service can re-read entries older than its TTL;
 *   - popularity (what training used, from the batch version's `ipop` lists), and the price,
 *     as the logarithms features use (computed once per item, not per feed);
 *   - co-visitation neighbour lists, and every cached list's keys (`keysOf`).
 *
 * One table belongs to one batch version (`version`): popularity and neighbours never change
 * within a version, and a new version starts a new table, so items that left the catalog do not
 * pile up. A request takes the table once and uses it throughout, so a table replaced while
 * the request waits on Redis stays consistent for it. A table past {@link ITEM_TABLE_LIMIT}
 * items is replaced too (the feed service does that when a request starts).
 *
 * @example
 *   const table = new ItemTable(7);
 *   const k = table.intern('sku-1');
 *   table.setFacts(k, now, { categoryL1: 'shoes', price: 49, isAvailable: true, createdAt });
 *   table.price[k]; // 49
 */
import type { ScoredList } from './scored-list.js';
import { priceLog, type ItemFacts } from './rank-features.js';

/** The catalog fields a table keeps (`CatalogItem` has them). */
export interface CatalogFacts extends ItemFacts {
  isAvailable: boolean;
}

/** The items one table holds before the feed service starts a new one. */
export const ITEM_TABLE_LIMIT = 1_000_000;

export class ItemTable {
  /** The batch version the popularity and neighbours belong to (null: no batch yet). */
  readonly version: number | null;
  /** Item id per key. */
  readonly ids: string[] = [];
  /** Category name per category number (`category` column). */
  readonly categories: string[] = [];
  /** Category name -> its number. */
  readonly categoryIndex = new Map<string, number>();

  /** When the catalog facts were read, epoch ms; 0 = never. */
  readAt: Float64Array = new Float64Array(1024);
  /** 1 while the feed service re-reads the item's catalog facts. */
  refreshing: Uint8Array = new Uint8Array(1024);
  /** 1 when the item is in the catalog (the other catalog columns are then set). */
  known: Uint8Array = new Uint8Array(1024);
  available: Uint8Array = new Uint8Array(1024);
  /** NaN when the catalog has no price. */
  price: Float64Array = new Float64Array(1024);
  /** `priceLog` of the price (the feature; NaN when unknown). */
  priceLog: Float64Array = new Float64Array(1024);
  createdAt: Float64Array = new Float64Array(1024);
  /** Category number (`categories`); read only where `known`. */
  category: Int32Array = new Int32Array(1024);
  /** The item's train popularity in this version, as `popularityLog`; NaN when not (yet) read. */
  popularityLog: Float64Array = new Float64Array(1024).fill(Number.NaN);
  /** Per category number: 1 once the category's popularity list was read. */
  popularityRead: Uint8Array = new Uint8Array(64);
  /** Co-visitation neighbours per key: a list, null (none), or undefined (not read). */
  readonly neighbours: (ScoredList | null | undefined)[] = [];
  /** EASE weights per key (`batch/ease.ts`), kept as `neighbours` are. */
  readonly ease: (ScoredList | null | undefined)[] = [];

  /** Mixing scratch per key: the stamp of the mix that last used it, and its slot there. */
  stampOf: Uint32Array = new Uint32Array(1024);
  slotOf: Uint32Array = new Uint32Array(1024);
  stamp = 0;

  readonly #index = new Map<string, number>();
  readonly #listKeys = new WeakMap<ScoredList, Int32Array>();

  constructor(version: number | null) {
    this.version = version;
  }

  get size(): number {
    return this.ids.length;
  }

  /** The key of `id`, added when new. */
  intern(id: string): number {
    let k = this.#index.get(id);
    if (k === undefined) {
      k = this.ids.length;
      this.#index.set(id, k);
      this.ids.push(id);
      if (k >= this.readAt.length) this.#grow(this.readAt.length * 2);
    }
    return k;
  }

  /** The key of `id`, or undefined when the table does not have it. */
  find(id: string): number | undefined {
    return this.#index.get(id);
  }

  /** The keys of a list's ids, computed once per list (lists are immutable). */
  keysOf(list: ScoredList): Int32Array {
    let keys = this.#listKeys.get(list);
    if (keys === undefined) {
      const n = list.ids.length;
      keys = new Int32Array(n);
      for (let i = 0; i < n; i++) keys[i] = this.intern(list.ids[i] as string);
      this.#listKeys.set(list, keys);
    }
    return keys;
  }

  /** Registers keys already known for a list (`keysOf` then returns them). */
  setKeys(list: ScoredList, keys: Int32Array): void {
    this.#listKeys.set(list, keys);
  }

  /** The number of a category name, added when new. */
  categoryOf(name: string): number {
    let c = this.categoryIndex.get(name);
    if (c === undefined) {
      c = this.categories.length;
      this.categoryIndex.set(name, c);
      this.categories.push(name);
      if (c >= this.popularityRead.length) {
        const grown = new Uint8Array(this.popularityRead.length * 2);
        grown.set(this.popularityRead);
        this.popularityRead = grown;
      }
    }
    return c;
  }

  /** Records what the catalog said about item `k` at `at` (null: not in the catalog). */
  setFacts(k: number, at: number, facts: CatalogFacts | null): void {
    this.readAt[k] = at;
    if (facts === null) {
      this.known[k] = 0;
      this.available[k] = 0;
      this.price[k] = Number.NaN;
      this.priceLog[k] = Number.NaN;
      this.createdAt[k] = 0;
      this.category[k] = 0;
      return;
    }
    this.known[k] = 1;
    this.available[k] = facts.isAvailable ? 1 : 0;
    this.price[k] = facts.price ?? Number.NaN;
    this.priceLog[k] = priceLog(facts.price);
    this.createdAt[k] = facts.createdAt;
    this.category[k] = this.categoryOf(facts.categoryL1);
  }

  /**
   * Counts {@link forgetFacts} calls: a catalog read issued before a change may answer with the
   * old entry, so a read that sees this move while in flight stores its facts as already stale.
   */
  forgets = 0;

  /**
   * Forgets the catalog facts of these items, or of every item when none are named (they are
   * read again on next use).
   */
  forgetFacts(itemIds?: Iterable<string>): void {
    this.forgets++;
    if (itemIds === undefined) {
      this.readAt.fill(0);
      return;
    }
    for (const id of itemIds) {
      const k = this.#index.get(id);
      if (k !== undefined) this.readAt[k] = 0;
    }
  }

  #grow(capacity: number): void {
    const f64 = (a: Float64Array, fill = 0): Float64Array => {
      const b = new Float64Array(capacity);
      if (fill !== 0) b.fill(fill, a.length);
      b.set(a);
      return b;
    };
    const u8 = (a: Uint8Array): Uint8Array => {
      const b = new Uint8Array(capacity);
      b.set(a);
      return b;
    };
    const u32 = (a: Uint32Array): Uint32Array => {
      const b = new Uint32Array(capacity);
      b.set(a);
      return b;
    };
    this.readAt = f64(this.readAt);
    this.refreshing = u8(this.refreshing);
    this.known = u8(this.known);
    this.available = u8(this.available);
    this.price = f64(this.price);
    this.priceLog = f64(this.priceLog);
    this.createdAt = f64(this.createdAt);
    const category = new Int32Array(capacity);
    category.set(this.category);
    this.category = category;
    this.popularityLog = f64(this.popularityLog, Number.NaN);
    this.stampOf = u32(this.stampOf);
    this.slotOf = u32(this.slotOf);
  }
}
