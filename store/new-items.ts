/**
 * The newest catalog items, overall and per category: the pool from which the feed explores
 * items that have no interactions yet, so a new item is shown (and can earn its place in
 * trending and the neighbour lists) before the next batch. Written with the catalog in the same
 * pipeline (`CatalogStore`): an available item is added with its createdAt as score, an
 * unavailable or deleted one removed, and each set keeps its newest {@link NEW_ITEMS_KEPT}.
 * Readers ask for the items created within an age (`RECSYS_FEED_NEW_ITEM_AGE_MS`).
 *
 * @example
 *   const pool = await new NewItemsStore(redis).read('shoes', Date.now() - 7 * 86_400_000, 50);
 */
import type { ChainableCommander } from 'ioredis';
import type { RedisClient } from './redis.js';
import { newItemsKey } from './keys.js';

/** Items each set keeps (the newest); 500 ids of ~20 bytes are some 40 KB per category. */
export const NEW_ITEMS_KEPT = 500;

/** An item as the index needs it. */
export interface NewItemFacts {
  itemId: string;
  categoryL1: string;
  isAvailable: boolean;
  createdAt: number;
}

/** Queues the index updates for written items; `trimmed` collects the sets to trim once. */
export function indexItems(
  pipeline: ChainableCommander,
  items: readonly NewItemFacts[],
  trimmed: Set<string>,
): void {
  for (const item of items) {
    const keys = [newItemsKey(null), newItemsKey(item.categoryL1)];
    for (const key of keys) {
      if (item.isAvailable) pipeline.zadd(key, item.createdAt, item.itemId);
      else pipeline.zrem(key, item.itemId);
      trimmed.add(key);
    }
  }
}

/** Queues the removal of deleted items (their category is unknown: readers check the catalog). */
export function unindexItems(pipeline: ChainableCommander, itemIds: readonly string[]): void {
  if (itemIds.length > 0) pipeline.zrem(newItemsKey(null), ...itemIds);
}

/** Queues the trims of the sets `indexItems` touched: each keeps its newest items. */
export function trimIndex(pipeline: ChainableCommander, trimmed: Set<string>): void {
  for (const key of trimmed) pipeline.zremrangebyrank(key, 0, -(NEW_ITEMS_KEPT + 1));
  trimmed.clear();
}

/** Reads the index. */
export class NewItemsStore {
  readonly #redis: RedisClient;

  constructor(redis: RedisClient) {
    this.#redis = redis;
  }

  /** The newest items created at or after `since` in `category` (null: all), newest first. */
  read(category: string | null, since: number, limit: number): Promise<string[]> {
    return this.#redis.zrevrangebyscore(newItemsKey(category), '+inf', since, 'LIMIT', 0, limit);
  }
}
