/**
 * The catalog role: keeps `item:<itemId>` in Redis equal to the compacted items topic (JSON
 * value per item, key = itemId; an empty value deletes the item). A record that does not parse
 * goes to the DLQ with the reason `bad_catalog_record`. Offsets are resolved after Redis has
 * the chunk, and replaying an upsert is harmless.
 */
import { Counter } from 'prom-client';
import type { DlqRecord } from '../../schemas/index.js';
import {
  CatalogRecordError,
  CatalogStore,
  toCatalogItem,
  type CatalogItem,
} from '../../store/catalog.js';
import { consumerMetrics, startConsumer, type ConsumerHandle } from '../consumer.js';
import { createDeadLetter, type DeadLetter } from '../dead-letter.js';
import { createKafka, createProducer, ensureTopics } from '../kafka.js';
import { createRedis } from '../../store/redis.js';
import { kafkaRedisReadiness, consumerFailure } from './role.js';
import { retryForever, type RoleDeps, type StreamRole } from '../../core/index.js';

export function startCatalog({ config, log: parent, metrics }: RoleDeps): StreamRole {
  const log = parent.child({ role: 'catalog' });
  const kafka = createKafka(config.kafka, log, 'catalog');
  const producer = createProducer(kafka);
  const redis = createRedis(config.redis.url, 'recsys-catalog');
  const store = new CatalogStore(redis, { cacheTtlMs: 0, cacheSize: 0 });
  const stopping = new AbortController();
  let consumer: ConsumerHandle | null = null;
  const items = new Counter({
    name: 'recsys_catalog_records_total',
    help: 'catalog records applied, by outcome (upserted, deleted, rejected)',
    labelNames: ['outcome'],
    registers: [metrics],
  });

  const ready = (async () => {
    const forever = retryForever(log, stopping.signal);
    await forever('kafka topics', () => ensureTopics(kafka, config.kafka, log));
    await forever('kafka producer connect', () => producer.connect());
    const deadLetter: DeadLetter = await forever('dlq schema', () =>
      createDeadLetter(config, producer),
    );
    consumer = startConsumer<Buffer | null>({
      kafka,
      groupId: config.consumer.groups.catalog,
      topics: [config.kafka.topics.items],
      decoder: null,
      log,
      metrics: consumerMetrics(metrics),
      tuning: config.consumer,
      undecodable: async () => undefined,
      handle: async (records) => {
        const upserts: CatalogItem[] = [];
        const deletes: string[] = [];
        const rejected: DlqRecord[] = [];
        for (const r of records) {
          const where = `${r.topic}/${r.partition}@${r.offset}`;
          if (!r.value || r.value.length === 0) {
            if (r.key) deletes.push(r.key);
            continue;
          }
          try {
            const raw: unknown = JSON.parse(r.value.toString('utf8'));
            if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
              throw new CatalogRecordError(where, 'not a JSON object');
            }
            upserts.push(toCatalogItem(raw as Record<string, unknown>, where));
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
        await store.upsert(upserts);
        await store.remove(deletes);
        await deadLetter(rejected);
        items.inc({ outcome: 'upserted' }, upserts.length);
        items.inc({ outcome: 'deleted' }, deletes.length);
        items.inc({ outcome: 'rejected' }, rejected.length);
      },
    });
    await consumer.ready;
  })();
  ready.catch(() => undefined);
  const failed = consumerFailure(ready, () => consumer);

  return {
    ready,
    failed,
    readiness: kafkaRedisReadiness(config, kafka, redis, () => consumer),
    async stop() {
      stopping.abort(new Error('stopping'));
      await ready.catch(() => undefined);
      await consumer?.stop();
      await producer.disconnect().catch(() => undefined);
      redis.disconnect();
    },
  };
}
