import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Producer, ProducerBatch } from 'kafkajs';
import { KafkaBatcher, type BatcherOptions } from '../../../stream/producer.js';
import { createLogger } from '../../../core/log.js';

const log = createLogger('silent');

/** A stand-in for the kafkajs producer: records requests, answers when told to. */
function fakeProducer() {
  const requests: { batch: ProducerBatch; resolve: () => void; reject: (e: Error) => void }[] = [];
  let concurrent = 0;
  let maxConcurrent = 0;
  const producer = {
    sendBatch(batch: ProducerBatch) {
      concurrent++;
      maxConcurrent = Math.max(maxConcurrent, concurrent);
      return new Promise((resolve, reject) => {
        requests.push({
          batch,
          resolve: () => {
            concurrent--;
            resolve([]);
          },
          reject: (e) => {
            concurrent--;
            reject(e);
          },
        });
      });
    },
  } as unknown as Producer;
  return { producer, requests, maxConcurrent: () => maxConcurrent };
}

/** A batcher over `fake`; bounds are roomy unless a test sets its own. */
function batcherOn(
  fake: ReturnType<typeof fakeProducer>,
  opts: Partial<BatcherOptions> = {},
): KafkaBatcher {
  return new KafkaBatcher({
    producer: fake.producer,
    lingerMs: 1,
    maxBatch: 100,
    maxBatchBytes: 1 << 20,
    log,
    ...opts,
  });
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));
const count = (b: ProducerBatch) =>
  (b.topicMessages ?? []).reduce((n, t) => n + t.messages.length, 0);

describe('KafkaBatcher', () => {
  it('resolves a send only after Kafka acknowledged its batch', async () => {
    const fake = fakeProducer();
    const batcher = batcherOn(fake);
    let done = false;
    const p = batcher.send('t', { key: 'u', value: 'v' }).then(() => (done = true));
    await tick(5);
    assert.equal(fake.requests.length, 1);
    assert.equal(done, false);
    fake.requests[0]?.resolve();
    await p;
    assert.equal(done, true);
  });

  it('keeps one request in flight and puts what arrives meanwhile in the next one', async () => {
    const fake = fakeProducer();
    const batcher = batcherOn(fake, { maxBatch: 1000 });
    const all = [batcher.send('t', { value: '0' })];
    await tick(5);
    for (let i = 1; i <= 50; i++) all.push(batcher.send(i % 2 ? 'a' : 'b', { value: String(i) }));
    await tick(5);
    assert.equal(fake.requests.length, 1, 'second request waits for the first');
    fake.requests[0]?.resolve();
    await tick(5);
    assert.equal(fake.requests.length, 2);
    assert.equal(count((fake.requests[1] as { batch: ProducerBatch }).batch), 50);
    assert.equal(fake.requests[1]?.batch.acks, -1);
    fake.requests[1]?.resolve();
    await Promise.all(all);
    assert.equal(fake.maxConcurrent(), 1);
  });

  it('splits at maxBatch', async () => {
    const fake = fakeProducer();
    const batcher = batcherOn(fake, { lingerMs: 50, maxBatch: 10 });
    const all = Array.from({ length: 25 }, (_, i) => batcher.send('t', { value: String(i) }));
    await tick(1);
    assert.equal(
      count((fake.requests[0] as { batch: ProducerBatch }).batch),
      10,
      'a full batch goes without lingering',
    );
    for (let i = 0; i < 3; i++) {
      fake.requests[i]?.resolve();
      await tick(1);
    }
    await tick(60);
    fake.requests[2]?.resolve();
    await Promise.all(all);
    assert.deepEqual(
      fake.requests.map((r) => count(r.batch)),
      [10, 10, 5],
    );
  });

  it('retries a failed request with the same messages and reports the error', async () => {
    const fake = fakeProducer();
    const errors: string[] = [];
    const batcher = batcherOn(fake, {
      maxBatch: 10,
      onSendError: (err, topics) => errors.push(`${(err as Error).message}@${topics.join(',')}`),
    });
    const p = batcher.send('t', { value: 'x' });
    await tick(5);
    fake.requests[0]?.reject(new Error('broker down'));
    for (let i = 0; i < 100 && fake.requests.length < 2; i++) await tick(5);
    assert.equal(fake.requests.length, 2);
    assert.deepEqual(fake.requests[1]?.batch.topicMessages, fake.requests[0]?.batch.topicMessages);
    fake.requests[1]?.resolve();
    await p;
    assert.deepEqual(errors, ['broker down@t']);
  });

  it('rejects what Kafka never acknowledged when closed, and refuses new sends', async () => {
    const fake = fakeProducer();
    const batcher = batcherOn(fake, { maxBatch: 10 });
    const p = batcher.send('t', { value: 'x' });
    await tick(5);
    fake.requests[0]?.reject(new Error('broker down'));
    await batcher.close(50);
    await assert.rejects(p);
    await assert.rejects(batcher.send('t', { value: 'y' }), /closed/);
  });

  it('leaves no listener behind per batch (a long-running bridge sends millions)', async () => {
    const fake = fakeProducer();
    const warnings: string[] = [];
    const onWarning = (w: Error): void => {
      warnings.push(w.name);
    };
    process.on('warning', onWarning);
    const batcher = batcherOn(fake, { lingerMs: 0, maxBatch: 1 });
    for (let i = 0; i < 30; i++) {
      const p = batcher.send('t', { value: String(i) });
      await tick(1);
      fake.requests[i]?.resolve();
      await p;
    }
    await tick(5);
    process.off('warning', onWarning);
    assert.deepEqual(warnings, []);
  });

  it('bounds a request by payload bytes too, and sends an oversized message alone', async () => {
    const fake = fakeProducer();
    const batcher = batcherOn(fake, { maxBatchBytes: 1000 });
    const big = Buffer.alloc(1500);
    const small = Buffer.alloc(400);
    const all = [big, small, small, small, small].map((value) => batcher.send('t', { value }));
    for (let i = 0; i < 10 && fake.requests.length < 3; i++) {
      await tick(5);
      fake.requests[fake.requests.length - 1]?.resolve();
    }
    await Promise.all(all);
    assert.deepEqual(
      fake.requests.map((r) => count(r.batch)),
      [1, 2, 2],
      'the 1500-byte message alone, then 400+400 (a third would pass 1000)',
    );
  });
});
