/**
 * The item catalog in Redis (`item:<itemId>` hashes): loaded from a JSON Lines or CSV file, or
 * from the compacted items topic (JSON value per item, key = itemId, empty value = delete),
 * and read by the feature consumer (category for affinities) and the server (filters).
 *
 * @example
 *   const catalog = new CatalogStore(redis, { cacheTtlMs: 30_000, cacheSize: 100_000 });
 *   await catalog.upsert(parseCatalog(readFileSync('items.jsonl', 'utf8'), 'items.jsonl'));
 *   const items = await catalog.get(['i1', 'i2']); // Map, unknown ids absent
 */
import { openPipeline, type RedisClient } from './redis.js';
import { RecsysError } from '../core/index.js';
import { CATALOG_CHANNEL, ITEM_FIELDS, itemKey } from './keys.js';
import { indexItems, trimIndex, unindexItems } from './new-items.js';

export interface CatalogItem {
  itemId: string;
  categoryL1: string;
  categoryL2: string | null;
  price: number | null;
  isAvailable: boolean;
  /** When the item was added to the catalog, epoch ms. */
  createdAt: number;
}

/** A catalog record that cannot be used; names the line or record. */
export class CatalogRecordError extends RecsysError {
  readonly where: string;
  constructor(where: string, message: string) {
    super('RECSYS_CATALOG_INVALID', `${where}: ${message}`);
    this.where = where;
  }
}

const ID = /^[A-Za-z0-9_.:@-]{1,128}$/;
// Categories become parts of Redis keys and field names: no spaces or braces.
const CATEGORY = /^[^\s{}]{1,128}$/;

/** Validates one catalog object (as parsed from JSON or a CSV row). */
export function toCatalogItem(raw: Record<string, unknown>, where: string): CatalogItem {
  const fail = (m: string): never => {
    throw new CatalogRecordError(where, m);
  };
  const itemId = raw.itemId;
  if (typeof itemId !== 'string' || !ID.test(itemId)) fail('itemId: 1..128 of [A-Za-z0-9_.:@-]');
  const c1 = raw.categoryL1;
  if (typeof c1 !== 'string' || !CATEGORY.test(c1)) fail('categoryL1: 1..128 chars, no spaces');
  const c2 = raw.categoryL2 ?? null;
  if (c2 !== null && (typeof c2 !== 'string' || !CATEGORY.test(c2))) {
    fail('categoryL2: 1..128 chars, no spaces');
  }
  const priceRaw = raw.price ?? null;
  const price = priceRaw === null || priceRaw === '' ? null : Number(priceRaw);
  if (price !== null && !(Number.isFinite(price) && price >= 0)) fail('price: a number >= 0');
  const av = raw.isAvailable ?? true;
  const isAvailable = av === true || av === 'true' || av === '1' || av === 1;
  if (!isAvailable && !(av === false || av === 'false' || av === '0' || av === 0)) {
    fail('isAvailable: true or false');
  }
  const ctRaw = raw.createdAt ?? null;
  const createdAt =
    typeof ctRaw === 'number' ? ctRaw : typeof ctRaw === 'string' ? parseTime(ctRaw) : NaN;
  if (!Number.isFinite(createdAt)) fail('createdAt: epoch ms or an ISO 8601 time');
  return {
    itemId: itemId as string,
    categoryL1: c1 as string,
    categoryL2: c2 as string | null,
    price,
    isAvailable,
    createdAt,
  };
}

function parseTime(s: string): number {
  return /^\d+$/.test(s) ? Number(s) : Date.parse(s);
}

/**
 * Parses a whole catalog file: JSON Lines (one object per line) or CSV with a header row naming
 * the fields (`itemId,categoryL1,categoryL2,price,isAvailable,createdAt`; no quoted commas).
 * Throws on the first bad record, naming its line.
 */
export function parseCatalog(text: string, name: string): CatalogItem[] {
  const lines = text.split(/\r?\n/);
  const items: CatalogItem[] = [];
  const first = lines.find((l) => l.trim() !== '') ?? '';
  if (first.trimStart().startsWith('{')) {
    lines.forEach((line, i) => {
      if (line.trim() === '') return;
      let raw: unknown;
      try {
        raw = JSON.parse(line);
      } catch (err) {
        throw new CatalogRecordError(`${name}:${i + 1}`, `bad JSON: ${(err as Error).message}`);
      }
      if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
        throw new CatalogRecordError(`${name}:${i + 1}`, 'not a JSON object');
      }
      items.push(toCatalogItem(raw as Record<string, unknown>, `${name}:${i + 1}`));
    });
    return items;
  }
  const header = first.split(',').map((h) => h.trim());
  let seenHeader = false;
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    if (!seenHeader) {
      seenHeader = true;
      return;
    }
    const cells = line.split(',');
    if (cells.length !== header.length) {
      throw new CatalogRecordError(
        `${name}:${i + 1}`,
        `${cells.length} cells, header has ${header.length}`,
      );
    }
    const raw = Object.fromEntries(header.map((h, k) => [h, cells[k]?.trim() || null]));
    items.push(toCatalogItem(raw, `${name}:${i + 1}`));
  });
  return items;
}

/** One change of the items topic: the new entry, or null for a delete (tombstone). */
export interface CatalogChange {
  itemId: string;
  item: CatalogItem | null;
}

export interface CatalogOptions {
  /** How long a looked-up item (or its absence) is trusted in memory, ms. */
  cacheTtlMs: number;
  /** Items kept in memory at most (oldest entries go first); 0 = no cache, every lookup reads. */
  cacheSize: number;
}

/** Catalog reads and writes, with a small in-process cache for the per-event lookups. */
export class CatalogStore {
  readonly #redis: RedisClient;
  readonly #options: CatalogOptions;
  // Map keeps insertion order: deleting and re-inserting on refresh makes it a FIFO by age.
  readonly #cache = new Map<string, { at: number; item: CatalogItem | null }>();

  constructor(redis: RedisClient, options: CatalogOptions) {
    this.#redis = redis;
    this.#options = options;
  }

  /** Writes entries; then tells cache holders on {@link CATALOG_CHANNEL} (same pipeline). */
  async upsert(items: readonly CatalogItem[]): Promise<void> {
    for (let i = 0; i < items.length; i += 1000) {
      const chunk = items.slice(i, i + 1000);
      const pipeline = openPipeline(this.#redis);
      const trimmed = new Set<string>();
      for (const item of chunk) {
        const key = itemKey(item.itemId);
        pipeline.del(key);
        pipeline.hset(key, encodeItem(item));
        this.#cache.delete(item.itemId);
      }
      indexItems(pipeline, chunk, trimmed);
      trimIndex(pipeline, trimmed);
      pipeline.publish(CATALOG_CHANNEL, chunk.map((item) => item.itemId).join(' '));
      const replies = await pipeline.exec();
      for (const [err] of replies ?? []) if (err) throw err;
    }
  }

  /**
   * Applies upserts (an item) and deletes (null) in the order given, as the items topic holds
   * them: a delete followed by a re-add of one item ends with the item. One pipeline per 1000
   * changes; Redis runs a pipeline's commands in order. Then tells cache holders.
   */
  async apply(changes: readonly CatalogChange[]): Promise<void> {
    for (let i = 0; i < changes.length; i += 1000) {
      const chunk = changes.slice(i, i + 1000);
      const pipeline = openPipeline(this.#redis);
      const trimmed = new Set<string>();
      for (const { itemId, item } of chunk) {
        pipeline.del(itemKey(itemId));
        if (item) pipeline.hset(itemKey(itemId), encodeItem(item));
        if (item) indexItems(pipeline, [item], trimmed);
        else unindexItems(pipeline, [itemId]);
        this.#cache.delete(itemId);
      }
      trimIndex(pipeline, trimmed);
      pipeline.publish(CATALOG_CHANNEL, [...new Set(chunk.map((c) => c.itemId))].join(' '));
      const replies = await pipeline.exec();
      for (const [err] of replies ?? []) if (err) throw err;
    }
  }

  /** Deletes entries; then tells cache holders on {@link CATALOG_CHANNEL}. */
  async remove(itemIds: readonly string[]): Promise<void> {
    if (itemIds.length === 0) return;
    for (let i = 0; i < itemIds.length; i += 1000) {
      const chunk = itemIds.slice(i, i + 1000);
      // One DEL per key: the items' keys lie in many slots of a Redis Cluster.
      const pipeline = openPipeline(this.#redis);
      for (const id of chunk) pipeline.del(itemKey(id));
      unindexItems(pipeline, chunk);
      const replies = await pipeline.publish(CATALOG_CHANNEL, chunk.join(' ')).exec();
      for (const [err] of replies ?? []) if (err) throw err;
      for (const id of chunk) this.#cache.delete(id);
    }
  }

  /** The catalog entries of `itemIds` that exist (one pipelined round trip for cache misses). */
  async get(itemIds: Iterable<string>): Promise<Map<string, CatalogItem>> {
    const ids = [...new Set(itemIds)];
    const items = await this.lookup(ids);
    const found = new Map<string, CatalogItem>();
    ids.forEach((id, i) => {
      const item = items[i];
      if (item) found.set(id, item);
    });
    return found;
  }

  /**
   * The catalog entry of each of `itemIds`, aligned with it (null: not in the catalog); one
   * pipelined round trip for cache misses, none when every id is cached. The form a feed
   * request uses: no map or set per call.
   */
  async lookup(itemIds: readonly string[]): Promise<(CatalogItem | null)[]> {
    const now = Date.now();
    const ttl = this.#options.cacheTtlMs;
    const out: (CatalogItem | null)[] = [];
    let missing: Map<string, number[]> | null = null;
    for (let i = 0; i < itemIds.length; i++) {
      const id = itemIds[i] as string;
      const hit = this.#cache.get(id);
      if (hit && now - hit.at < ttl) out.push(hit.item);
      else {
        out.push(null);
        missing ??= new Map();
        const at = missing.get(id);
        if (at) at.push(i);
        else missing.set(id, [i]);
      }
    }
    if (missing) {
      const ids = [...missing.keys()];
      const pipeline = openPipeline(this.#redis);
      for (const id of ids) pipeline.hgetall(itemKey(id));
      const replies = (await pipeline.exec()) ?? [];
      ids.forEach((id, k) => {
        const [err, h] = replies[k] ?? [new Error('no reply'), null];
        if (err) throw err;
        const item = decodeItem(id, h as Record<string, string>);
        this.#remember(id, now, item);
        for (const i of missing.get(id) as number[]) out[i] = item;
      });
    }
    return out;
  }

  #remember(id: string, at: number, item: CatalogItem | null): void {
    if (this.#options.cacheSize <= 0) return;
    this.#cache.delete(id);
    this.#cache.set(id, { at, item });
    while (this.#cache.size > this.#options.cacheSize) {
      const oldest = this.#cache.keys().next().value as string;
      this.#cache.delete(oldest);
    }
  }
}

function encodeItem(item: CatalogItem): Record<string, string> {
  const h: Record<string, string> = {
    [ITEM_FIELDS.categoryL1]: item.categoryL1,
    [ITEM_FIELDS.isAvailable]: item.isAvailable ? '1' : '0',
    [ITEM_FIELDS.createdAt]: String(item.createdAt),
  };
  if (item.categoryL2 !== null) h[ITEM_FIELDS.categoryL2] = item.categoryL2;
  if (item.price !== null) h[ITEM_FIELDS.price] = String(item.price);
  return h;
}

/** Decodes an `item:<id>` hash; null when the item is not in the catalog. */
export function decodeItem(itemId: string, h: Record<string, string>): CatalogItem | null {
  const c1 = h[ITEM_FIELDS.categoryL1];
  if (c1 === undefined) return null;
  return {
    itemId,
    categoryL1: c1,
    categoryL2: h[ITEM_FIELDS.categoryL2] ?? null,
    price: h[ITEM_FIELDS.price] === undefined ? null : Number(h[ITEM_FIELDS.price]),
    isAvailable: h[ITEM_FIELDS.isAvailable] !== '0',
    createdAt: Number(h[ITEM_FIELDS.createdAt] ?? 0),
  };
}
