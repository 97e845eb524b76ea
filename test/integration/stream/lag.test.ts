/**
 * Consumer lag on a timer (`stream/lag-poller.ts`) against the real Kafka: a consumer whose
 * handler stops returning (a stalled consumer) still shows `recsys_consumer_lag_messages`
 * growing as records keep arriving, while the loop alone would keep showing its last value.
 * Then, once the handler returns, the lag falls back to 0.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import kafkajs from 'kafkajs';
import { Registry } from 'prom-client';
import { sleep } from '../../../core/retry.js';
import { consumerMetrics } from '../../../stream/consumer-metrics.js';
import { startConsumer } from '../../../stream/consumer.js';
import { createKafka } from '../../../stream/kafka.js';
import { deleteTopics } from '../ingest/bridge-process.js';
import { config, log, requireServices, uniq } from '../harness.js';

const POLL_MS = 200;

/** Polls `read` until `ok` holds for its value; fails with the last value after `timeoutMs`. */
async function until<T>(
  what: string,
  read: () => Promise<T>,
  ok: (v: T) => boolean,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = await read();
  while (!ok(last)) {
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(last)}`);
    await sleep(50);
    last = await read();
  }
  return last;
}

describe('consumer lag read on a timer', () => {
  const topic = uniq('lag');
  const groupId = uniq('lag-group');
  after(() => deleteTopics([topic]));

  test('a stalled consumer shows growing lag as records are produced', async (t) => {
    if (!(await requireServices(t, 'kafka'))) return;
    const kafka = createKafka(config.kafka, log, 'lag-test');
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
    await admin.disconnect();
    const producer = kafka.producer({ createPartitioner: kafkajs.Partitioners.DefaultPartitioner });
    await producer.connect();
    const produce = async (n: number): Promise<void> => {
      const messages = Array.from({ length: n }, (_, i) => ({ key: 'k', value: `v${i}` }));
      await producer.send({ topic, acks: -1, messages });
    };

    const registry = new Registry();
    const metrics = consumerMetrics(registry);
    const lag = async (): Promise<number | undefined> =>
      (await metrics.lag.get()).values.find((v) => v.labels.topic === topic)?.value;
    let handled = 0;
    let stalled = false;
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const consumer = startConsumer<Buffer | null>({
      kafka,
      groupId,
      topics: [topic],
      decoder: null,
      handle: async (records) => {
        if (stalled) await gate;
        handled += records.length;
      },
      rejected: async () => undefined,
      log,
      metrics,
      tuning: {
        maxWaitMs: 100,
        minBytes: 1,
        chunkSize: 1000,
        concurrency: 1,
        commitIntervalMs: 100,
        // Longer than the stall below: the member keeps its partition while its handler hangs.
        sessionTimeoutMs: 30_000,
        lagPollMs: POLL_MS,
      },
    });
    try {
      await consumer.ready;
      await produce(10);
      await until(
        'records handled',
        async () => handled,
        (n) => n === 10,
      );
      await until('lag after catching up', lag, (v) => v === 0);

      // Stall: the next batch's handler never returns until released.
      stalled = true;
      await produce(5);
      await until('lag with the handler stuck', lag, (v) => v === 5);
      await produce(20);
      await until('lag growing while stuck', lag, (v) => v === 25);
      assert.equal(handled, 10, 'the stalled consumer handled nothing more');

      release();
      await until(
        'records handled after the stall',
        async () => handled,
        (n) => n === 35,
      );
      await until('lag after recovering', lag, (v) => v === 0);
    } finally {
      release();
      await consumer.stop();
      await producer.disconnect();
    }
  });
});
