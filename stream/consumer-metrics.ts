/**
 * The consumer loop's metrics (`consumer.ts`), one set per registry, labelled by group.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface ConsumerMetrics {
  lag: Gauge<'group' | 'topic' | 'partition'>;
  records: Counter<'group'>;
  undecodable: Counter<'group'>;
  chunkSeconds: Histogram<'group'>;
  chunkRecords: Histogram<'group'>;
  ageSeconds: Histogram<'group'>;
  handleFailures: Counter<'group'>;
  rejoins: Counter<'group'>;
  deadLetters: Counter<'role' | 'reason'>;
}

const metricsByRegistry = new WeakMap<Registry, ConsumerMetrics>();

export function consumerMetrics(registry: Registry): ConsumerMetrics {
  const existing = metricsByRegistry.get(registry);
  if (existing) return existing;
  const registers = [registry];
  const metrics: ConsumerMetrics = {
    lag: new Gauge({
      name: 'recsys_consumer_lag_messages',
      help: 'records between the high watermark and the last resolved offset, per group and partition',
      labelNames: ['group', 'topic', 'partition'],
      registers,
    }),
    records: new Counter({
      name: 'recsys_consumer_records_total',
      help: 'records whose effect was made durable',
      labelNames: ['group'],
      registers,
    }),
    undecodable: new Counter({
      name: 'recsys_consumer_undecodable_total',
      help: 'records that could not be decoded and went to the DLQ',
      labelNames: ['group'],
      registers,
    }),
    chunkSeconds: new Histogram({
      name: 'recsys_consumer_chunk_seconds',
      help: 'time to make one chunk durable (decode, handle), retries included',
      labelNames: ['group'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    chunkRecords: new Histogram({
      name: 'recsys_consumer_chunk_records',
      help: 'records per chunk handed to the role',
      labelNames: ['group'],
      buckets: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500],
      registers,
    }),
    ageSeconds: new Histogram({
      name: 'recsys_consumer_record_age_seconds',
      help: 'Kafka record timestamp to effect durable (freshness of what the role serves)',
      labelNames: ['group'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    handleFailures: new Counter({
      name: 'recsys_consumer_handle_failures_total',
      help: 'failed attempts to make a chunk (or part of one) durable',
      labelNames: ['group'],
      registers,
    }),
    rejoins: new Counter({
      name: 'recsys_consumer_rejoins_total',
      help: 'times the consumer left and joined its group again because commits kept failing (a moved coordinator)',
      labelNames: ['group'],
      registers,
    }),
    deadLetters: new Counter({
      name: 'recsys_consumer_dead_letters_total',
      help: 'records a consuming role wrote to the DLQ, by role and reason (undecodable, foreign_schema, invalid_record, redis_wrongtype, redis_script_error, redis_oom, ...)',
      labelNames: ['role', 'reason'],
      registers,
    }),
  };
  metricsByRegistry.set(registry, metrics);
  return metrics;
}
