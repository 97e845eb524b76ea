import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Producer, ProducerBatch } from 'kafkajs';
import {
  type BatcherOptions,
  IngestQueueFullError,
  KafkaBatcher,
} from '../../../stream/producer.js';
import { RecentWrites } from '../../../stream/recent-writes.js';
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

describe('KafkaBatcher byte bound', () => {
  const kb = (n: number): Buffer => Buffer.alloc(n * 1024);

  it('refuses a send past maxQueuedBytes at once, counting the request in flight', async () => {
    const fake = fakeProducer();
    const batcher = batcherOn(fake, { maxQueuedBytes: 10 * 1024, maxBatch: 1 });
    const first = batcher.send('t', { value: kb(4) });
    await tick(5);
    assert.equal(fake.requests.length, 1, 'the first is in flight (Kafka not answering yet)');
    const second = batcher.send('t', { value: kb(4) });
    assert.equal(batcher.heldBytes, 8 * 1024, 'in flight and queued both count');
    await assert.rejects(batcher.send('t', { value: kb(4) }), (err: unknown) => {
      assert.ok(err instanceof IngestQueueFullError);
      assert.equal(err.code, 'RECSYS_INGEST_QUEUE_FULL');
      assert.equal(err.heldBytes, 8 * 1024);
      assert.equal(err.limitBytes, 10 * 1024);
      return true;
    });
    assert.equal(batcher.pending, 1, 'the refused message was not queued');
    assert.equal(batcher.hasRoom(), true, '2 KiB are left');
    const forced = batcher.send('t', { value: kb(4) }, { force: true });
    assert.equal(batcher.heldBytes, 12 * 1024, 'forced past the bound');
    for (let i = 0; i < 3; i++) {
      await tick(5);
      fake.requests[i]?.resolve();
    }
    await Promise.all([first, second, forced]);
    assert.equal(batcher.heldBytes, 0);
  });

  it('takes one send of any size into an empty batcher, so nothing is refused for ever', async () => {
    const fake = fakeProducer();
    const batcher = batcherOn(fake, { maxQueuedBytes: 1024 });
    const p = batcher.send('t', { value: kb(8) });
    assert.equal(batcher.hasRoom(), false);
    await assert.rejects(batcher.send('t', { value: 'x' }), IngestQueueFullError);
    await tick(5);
    fake.requests[0]?.resolve();
    await p;
    assert.equal(batcher.heldBytes, 0);
  });

  it('forces a send past the bound when asked (MQTT QoS 1, bounded by receive maximum)', async () => {
    const fake = fakeProducer();
    const batcher = batcherOn(fake, { maxQueuedBytes: 1024, maxBatch: 100 });
    const all = [1, 2, 3].map(() => batcher.send('t', { value: kb(1) }, { force: true }));
    assert.equal(batcher.heldBytes, 3 * 1024);
    await tick(5);
    fake.requests[0]?.resolve();
    await Promise.all(all);
  });

  it('queues a whole HTTP batch or none of it', async () => {
    const fake = fakeProducer();
    const batcher = batcherOn(fake, { maxQueuedBytes: 10 * 1024, lingerMs: 1000 });
    const first = batcher.send('t', { value: kb(4) });
    const messages = [1, 2, 3].map(() => ({ topic: 't', message: { value: kb(3) } }));
    await assert.rejects(batcher.sendAll(messages), IngestQueueFullError);
    assert.equal(batcher.pending, 1, 'none of the three was queued');
    const fits = batcher.sendAll(messages.slice(0, 2));
    assert.equal(batcher.pending, 3, '4 + 2 x 3 KiB fit in 10 KiB');
    const flushed = batcher.flush();
    await tick(5);
    fake.requests[0]?.resolve();
    await Promise.all([first, fits, flushed]);
    assert.equal(count((fake.requests[0] as { batch: ProducerBatch }).batch), 3);
  });

  it('withdraws messages Kafka has not taken when the caller gives up, freeing their bytes', async () => {
    const fake = fakeProducer();
    let rooms = 0;
    const batcher = batcherOn(fake, { maxQueuedBytes: 8 * 1024, maxBatch: 1 });
    batcher.onRoom(() => rooms++);
    const inFlight = batcher.send('t', { value: kb(4) });
    await tick(5);
    const controller = new AbortController();
    const waiting = batcher.sendAll(
      [
        { topic: 't', message: { value: kb(2) } },
        { topic: 't', message: { value: kb(2) } },
      ],
      { signal: controller.signal },
    );
    assert.equal(batcher.hasRoom(), false);
    const reason = new Error('http timeout');
    controller.abort(reason);
    await assert.rejects(waiting, (err) => err === reason);
    assert.equal(batcher.heldBytes, 4 * 1024, 'only the request in flight holds bytes now');
    assert.equal(batcher.pending, 0);
    assert.ok(rooms >= 1, 'room was announced');
    fake.requests[0]?.resolve();
    await inFlight;
    await tick(10);
    assert.equal(fake.requests.length, 1, 'the withdrawn messages never went to Kafka');
  });

  it('rejects a caller that gives up on a message already in flight; the request goes on', async () => {
    const fake = fakeProducer();
    const batcher = batcherOn(fake);
    const controller = new AbortController();
    const p = batcher.send('t', { value: 'x' }, { signal: controller.signal });
    await tick(5);
    controller.abort(new Error('gave up'));
    await assert.rejects(p, /gave up/);
    assert.equal(batcher.heldBytes, 1, 'Kafka may still take it: its bytes stay held');
    fake.requests[0]?.resolve();
    await tick(5);
    assert.equal(batcher.heldBytes, 0);
  });

  it('frees the bytes of every withdrawn message while Kafka is away', async () => {
    const fake = fakeProducer();
    const batcher = batcherOn(fake, { maxQueuedBytes: 1 << 20, maxBatch: 1 });
    void batcher.send('t', { value: 'first' }).catch(() => undefined);
    await tick(5);
    for (let round = 0; round < 20; round++) {
      const controller = new AbortController();
      const sends = Array.from({ length: 500 }, () =>
        batcher.send('t', { value: kb(1) }, { signal: controller.signal }).catch(() => undefined),
      );
      controller.abort(new Error('timeout'));
      await Promise.all(sends);
    }
    assert.equal(batcher.pending, 0);
    assert.equal(batcher.heldBytes, 5);
    await batcher.close(20);
  });

  it('close() says whether everything was acknowledged in time', async () => {
    const fake = fakeProducer();
    const batcher = batcherOn(fake);
    const p = batcher.send('t', { value: 'x' });
    await tick(5);
    fake.requests[0]?.resolve();
    await p;
    assert.equal(await batcher.close(50), true);
    const hung = batcherOn(fake);
    const q = hung.send('t', { value: 'y' });
    assert.equal(await hung.close(30), false, 'Kafka never answered the second request');
    await assert.rejects(q, /closed before Kafka acknowledged/);
  });
});

/** Writes events (one message per key, the key as value) through `recent` and `batcher`. */
function sender(batcher: KafkaBatcher, recent: RecentWrites) {
  return (keys: string[], signal?: AbortSignal) =>
    recent.write(
      keys,
      (fresh, onOutcome) =>
        batcher.sendAll(
          fresh.map((i) => ({ topic: 't', message: { value: keys[i] as string } })),
          { signal, onOutcome },
        ),
      signal,
    );
}

describe('KafkaBatcher outcomes and RecentWrites', () => {
  it('tells each message its fate: written, withdrawn before Kafka took it, refused', async () => {
    const fake = fakeProducer();
    const batcher = batcherOn(fake, { maxQueuedBytes: 4, maxBatch: 1 });
    const fates: string[] = [];
    const tell = (name: string) => (i: number, written: boolean) =>
      fates.push(`${name}${i}:${written}`);
    const controller = new AbortController();
    const first = batcher.send(
      't',
      { value: 'abc' },
      { signal: controller.signal, onOutcome: tell('a') },
    );
    await tick(5);
    const queued = batcher.send(
      't',
      { value: 'd' },
      { signal: controller.signal, onOutcome: tell('b') },
    );
    await assert.rejects(
      batcher.sendAll([{ topic: 't', message: { value: 'efgh' } }], { onOutcome: tell('c') }),
      IngestQueueFullError,
    );
    controller.abort(new Error('timeout'));
    await assert.rejects(first, /timeout/);
    await assert.rejects(queued, /timeout/);
    assert.deepEqual(fates, ['c0:false', 'b0:false'], 'the taken message is not decided yet');
    fake.requests[0]?.resolve();
    await tick(5);
    assert.deepEqual(fates, ['c0:false', 'b0:false', 'a0:true']);
  });

  it('writes a re-sent event once when its first write landed after its sender gave up', async () => {
    const fake = fakeProducer();
    const batcher = batcherOn(fake);
    const recent = new RecentWrites(10);
    const send = sender(batcher, recent);
    const controller = new AbortController();
    const first = send(['u/e1', 'u/e2'], controller.signal);
    await tick(5);
    controller.abort(new Error('http timeout'));
    await assert.rejects(first, /http timeout/);
    // The retry comes while the first request is still out, with one new event.
    const retry = send(['u/e1', 'u/e2', 'u/e3']);
    await tick(5);
    assert.equal(fake.requests.length, 1, 'only the new event waits for the next request');
    fake.requests[0]?.resolve();
    await tick(5);
    assert.equal(fake.requests.length, 2);
    assert.deepEqual(
      fake.requests[1]?.batch.topicMessages?.[0]?.messages.map((m) => m.value),
      ['u/e3'],
    );
    fake.requests[1]?.resolve();
    assert.equal(await retry, 2, 'two copies were not written again');
    assert.equal(
      await send(['u/e2']),
      1,
      'a later copy of a written event is acknowledged at once',
    );
    assert.equal(fake.requests.length, 2);
  });

  it('writes a copy whose first write was withdrawn, and forgets the oldest past its capacity', async () => {
    const fake = fakeProducer();
    const batcher = batcherOn(fake, { maxBatch: 1 });
    const recent = new RecentWrites(2);
    const send = sender(batcher, recent);
    const blocker = send(['x']);
    await tick(5);
    const controller = new AbortController();
    const gaveUp = send(['a'], controller.signal);
    const copy = send(['a']); // waits for the first write of 'a'
    controller.abort(new Error('timeout'));
    await assert.rejects(gaveUp, /timeout/);
    fake.requests[0]?.resolve();
    await blocker;
    await tick(5);
    assert.equal(fake.requests.length, 2, "the copy went out when the first 'a' was withdrawn");
    fake.requests[1]?.resolve();
    assert.equal(await copy, 1);
    for (const key of ['b', 'c']) {
      const p = send([key]);
      await tick(5);
      fake.requests.at(-1)?.resolve();
      await p;
    }
    assert.equal(recent.size, 2);
    const again = send(['x']); // the oldest, forgotten: written again
    await tick(5);
    assert.equal(fake.requests.length, 5);
    fake.requests[4]?.resolve();
    assert.equal(await again, 0);
  });
});
