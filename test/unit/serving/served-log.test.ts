/**
 * The served log's buffer bound in bytes: `servedBytes` estimates a record's encoded size
 * (checked against the real Avro encoding), and records past `maxBufferedBytes` are dropped and
 * counted while Kafka is unreachable, where a count bound alone let logged feeds (some 40 times
 * a plain one) take hundreds of MB.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Registry } from 'prom-client';
import { createLogger, loadConfig } from '../../../core/index.js';
import { createEncoder, subjectsFor, type ServedFeed } from '../../../schemas/index.js';
import { FEATURE_COUNT, FEATURE_NAMES } from '../../../serving/rank-features.js';
import { servedBytes, startServedLog } from '../../../serving/served-log.js';

function feed(i: number, rows: number): ServedFeed {
  const items = Array.from({ length: 20 }, (_, j) => ({
    itemId: `item-${j}`,
    score: j / 20,
    source: 'covis',
  }));
  const itemIds = Array.from({ length: rows }, (_, j) => `item-${j}`);
  return {
    requestId: `req-${i}`,
    userId: `user-${i}`,
    ts: 1_700_000_000_000 + i,
    items,
    modelVersion: 'blend',
    latencyMs: 1.5,
    candidates:
      rows > 0
        ? {
            featureNames: [...FEATURE_NAMES],
            itemIds,
            features: Buffer.alloc(4 * rows * FEATURE_COUNT, 1),
          }
        : null,
  };
}

const config = loadConfig({
  RECSYS_ENV: 'development',
  RECSYS_KAFKA_BROKERS: '127.0.0.1:1',
  RECSYS_SCHEMA_REGISTRY_URL: 'http://127.0.0.1:1',
});

test('servedBytes is within a small factor of the encoded record', () => {
  const subject = subjectsFor(config.kafka.topics).find((s) => s.name === 'ServedFeed');
  assert.ok(subject);
  const encoder = createEncoder<ServedFeed>(1, subject.schema);
  for (const rows of [0, 200]) {
    const f = feed(1, rows);
    const ratio = servedBytes(f) / encoder.encode(f).length;
    assert.ok(ratio > 0.8 && ratio < 1.6, `rows ${rows}: estimate / encoded ${ratio.toFixed(2)}`);
  }
  assert.ok(servedBytes(feed(1, 200)) > 20 * servedBytes(feed(1, 0)));
});

test('records past maxBufferedBytes are dropped and counted while Kafka is away', async () => {
  const metrics = new Registry();
  const logged = servedBytes(feed(0, 200));
  const served = startServedLog({
    config,
    log: createLogger('silent', 'test'),
    metrics,
    maxBuffered: 1000,
    maxBufferedBytes: Math.floor(2.5 * logged),
  });
  try {
    for (let i = 0; i < 3; i++) served.write(feed(i, 200));
    // Plain feeds still fit in what is left.
    for (let i = 3; i < 6; i++) served.write(feed(i, 0));
    const dropped = await metrics.getSingleMetric('recsys_served_log_dropped_total')?.get();
    const full = dropped?.values.find((v) => v.labels.reason === 'buffer_full')?.value;
    assert.equal(full, 1, 'the third logged feed is over the byte bound');
    assert.throws(() => served.check(), /not connected/);
  } finally {
    await served.close();
  }
  const after = await metrics.getSingleMetric('recsys_served_log_dropped_total')?.get();
  const closed = after?.values.find((v) => v.labels.reason === 'closed')?.value;
  assert.equal(closed, 5, 'what waited at close is counted');
});
