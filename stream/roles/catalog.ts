/**
 * The catalog role: keeps `item:<itemId>` in Redis equal to the compacted items topic (JSON
 * value per item, key = itemId; an empty value deletes the item). A record that does not parse
 * goes to the DLQ with the reason `bad_catalog_record`. A chunk's changes are applied in offset
 * order (a delete then a re-add of one item ends with the item). Offsets are resolved after
 * Redis has the chunk, and replaying a chunk is harmless.
 */
import { Counter } from 'prom-client';
import type { RoleDeps, StreamRole } from '../../core/index.js';
import type { DlqRecord } from '../../schemas/index.js';
import {
  CatalogRecordError,
  CatalogStore,
  toCatalogItem,
  type CatalogChange,
} from '../../store/catalog.js';
import { createRedis, redisHealth } from '../../store/redis.js';
import type { ConsumedRecord } from '../consumer.js';
import { consumerRole } from './consumer-role.js';

export function startCatalog(deps: RoleDeps): StreamRole {
  const { config, metrics } = deps;
  const redis = createRedis(config.redis.url, 'recsys-catalog');
  const store = new CatalogStore(redis, { cacheTtlMs: 0, cacheSize: 0 });
  const items = new Counter({
    name: 'recsys_catalog_records_total',
    help: 'catalog records applied, by outcome (upserted, deleted, rejected)',
    labelNames: ['outcome'],
    registers: [metrics],
  });
  return consumerRole<Buffer | null>(deps, {
    role: 'catalog',
    groupId: config.consumer.groups.catalog,
    topics: [config.kafka.topics.items],
    raw: true,
    handle: (ctx) => async (records) => {
      const { changes, rejected } = sortRecords(records);
      await store.apply(changes);
      await ctx.deadLetter(rejected);
      const deleted = changes.filter((c) => c.item === null).length;
      items.inc({ outcome: 'upserted' }, changes.length - deleted);
      items.inc({ outcome: 'deleted' }, deleted);
      items.inc({ outcome: 'rejected' }, rejected.length);
    },
    checks: { redis: () => redisHealth(redis, config.healthTimeoutMs) },
    onStop: async () => redis.disconnect(),
  });
}

/**
 * Upserts and deletes (empty values) in offset order, and records that are no catalog item (to
 * the DLQ). A chunk holds one partition's records in offset order, and one item's records
 * share a partition (key = itemId), so this order is the topic's order for each item.
 */
export function sortRecords(records: readonly ConsumedRecord<Buffer | null>[]): {
  changes: CatalogChange[];
  rejected: DlqRecord[];
} {
  const changes: CatalogChange[] = [];
  const rejected: DlqRecord[] = [];
  for (const r of records) {
    const where = `${r.topic}/${r.partition}@${r.offset}`;
    if (!r.value || r.value.length === 0) {
      if (r.key) changes.push({ itemId: r.key, item: null });
      continue;
    }
    try {
      const raw: unknown = JSON.parse(r.value.toString('utf8'));
      if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
        throw new CatalogRecordError(where, 'not a JSON object');
      }
      const item = toCatalogItem(raw as Record<string, unknown>, where);
      changes.push({ itemId: item.itemId, item });
    } catch (err) {
      rejected.push({
        reason: 'bad_catalog_record',
        message: (err as Error).message,
        field: null,
        source: 'http',
        topic: r.topic,
        userId: null,
        receivedAt: Date.now(),
        original: r.value,
      });
    }
  }
  return { changes, rejected };
}
