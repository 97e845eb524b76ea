import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Producer, ProducerBatch } from 'kafkajs';
import { Registry } from 'prom-client';
import { loadConfig } from '../../../core/config.js';
import { createLogger } from '../../../core/log.js';
import { createEncoder, subjectsFor } from '../../../schemas/index.js';
import type { DlqRecord, UserEvent } from '../../../schemas/types.js';
import {
  createIngestMetrics,
  DlqTimeoutError,
  IngestPipeline,
  jsonSizeExceeds,
} from '../../../stream/ingest.js';
import { KafkaBatcher } from '../../../stream/producer.js';

const log = createLogger('silent');

describe('jsonSizeExceeds', () => {
  it('agrees with JSON.stringify on ordinary values, within the bound', () => {
    const event = {
      eventId: '6f1c2a4e-8d3b-4c1a-9e2f-0a1b2c3d4e5f',
      userId: 'u-1',
      itemId: 'sku-1',
      type: 'view',
      ts: 1795637259555,
      context: { page: 'home', position: 3, device: null },
      list: [1, 'two', true, null],
    };
    const exact = Buffer.byteLength(JSON.stringify(event));
    assert.equal(jsonSizeExceeds(event, exact), false);
    assert.equal(jsonSizeExceeds(event, exact - 40), true);
  });

  it('counts multi-byte strings in bytes', () => {
    const s = 'é'.repeat(100); // 200 bytes in UTF-8
    assert.equal(jsonSizeExceeds(s, 150), true);
    assert.equal(jsonSizeExceeds(s, 210), false);
  });

  it('walks a hostile 200,000-deep nesting without overflowing the stack', () => {
    let deep: unknown = 1;
    for (let i = 0; i < 200_000; i++) deep = [deep];
    assert.throws(() => JSON.stringify(deep), RangeError);
    assert.equal(jsonSizeExceeds(deep, 16384), true);
    assert.equal(jsonSizeExceeds(deep, 1_000_000), false);
  });
});

/** A pipeline over a producer that never answers (Kafka away), with short deadlines. */
function pipelineWithoutKafka(dlqTimeoutMs: number) {
  const requests: ProducerBatch[] = [];
  const producer = {
    sendBatch(batch: ProducerBatch) {
      requests.push(batch);
      return new Promise(() => undefined);
    },
  } as unknown as Producer;
  const batcher = new KafkaBatcher({
    producer,
    lingerMs: 1,
    maxBatch: 1,
    maxBatchBytes: 1 << 20,
    maxQueuedBytes: 1 << 20,
    log,
  });
  const registry = new Registry();
  const metrics = createIngestMetrics(registry);
  const topics = { events: 't.events', dlq: 't.dlq', served: 't.served' };
  const schema = (name: string): object =>
    subjectsFor(topics).find((s) => s.name === name)?.schema as object;
  const config = loadConfig({
    RECSYS_ENV: 'development',
    RECSYS_INGEST_DLQ_TIMEOUT_MS: String(dlqTimeoutMs),
  });
  const pipeline = new IngestPipeline({
    batcher,
    encoders: {
      event: createEncoder<UserEvent>(1, schema('UserEvent')),
      dlq: createEncoder<DlqRecord>(2, schema('DlqRecord')),
    },
    topics,
    limits: config.ingest,
    topicPrefix: 'recsys/events',
    metrics,
    log,
  });
  return { pipeline, batcher, metrics, requests };
}

describe('IngestPipeline DLQ deadline', () => {
  it('withdraws a DLQ record Kafka did not take in time, counts it, and fails the call', async () => {
    const { pipeline, batcher, metrics, requests } = pipelineWithoutKafka(100);
    // A valid event takes the one request in flight (Kafka never answers it)...
    const event = {
      eventId: '6f1c2a4e-8d3b-4c1a-9e2f-0a1b2c3d4e5f',
      userId: 'u1',
      itemId: 'i1',
      type: 'view',
      ts: Date.now(),
    };
    void pipeline
      .ingestMqtt('recsys/events/u1', Buffer.from(JSON.stringify(event)), 1)
      .catch(() => undefined);
    await new Promise((r) => setTimeout(r, 10));
    const held = batcher.heldBytes;
    // ...so a malformed one's DLQ record waits behind it, until the deadline.
    const t0 = performance.now();
    await assert.rejects(
      pipeline.ingestMqtt('recsys/events/u1', Buffer.from('{not json'), 1),
      DlqTimeoutError,
    );
    const waited = performance.now() - t0;
    assert.ok(waited >= 95 && waited < 1000, `gave up after ${waited} ms`);
    assert.equal(batcher.heldBytes, held, 'the withdrawn record holds no bytes');
    assert.equal(requests.length, 1, 'and never went to Kafka');
    const timeouts = await metrics.dlqTimeouts.get();
    assert.equal(timeouts.values.find((v) => v.labels.source === 'mqtt')?.value, 1);
    const dlq = await metrics.dlq.get();
    assert.equal(dlq.values.length, 0, 'not counted as dead-lettered');
    await batcher.close(10);
  });

  it('answers an HTTP rejection within the caller signal as well', async () => {
    const { pipeline, batcher } = pipelineWithoutKafka(60_000);
    const controller = new AbortController();
    const bad = [{ eventId: 'x', userId: 'u1' }];
    setTimeout(() => controller.abort(new Error('http timeout')), 50);
    await assert.rejects(
      pipeline.ingestHttp(bad, Buffer.from(JSON.stringify(bad)), controller.signal),
      /http timeout/,
    );
    await batcher.close(10);
  });
});
