import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Counter, Registry } from 'prom-client';
import { DependencyUnavailableError } from '../../../core/index.js';
import { createLogger } from '../../../core/log.js';
import { DlqTimeoutError } from '../../../stream/ingest.js';
import { MqttAdmission } from '../../../stream/mqtt-admission.js';
import type { InboundMessage } from '../../../stream/mqtt-subscriber.js';
import { IngestQueueFullError } from '../../../stream/producer.js';

const log = createLogger('silent');
const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

/** The pipeline as the admission sees it: room is set by the test, writes settle when told. */
function fakeTarget() {
  const calls: Array<{
    topic: string;
    qos: 0 | 1;
    resolve: () => void;
    reject: (e: Error) => void;
  }> = [];
  return {
    room: true,
    calls,
    hasRoom(): boolean {
      return this.room;
    },
    ingestMqtt(topic: string, _payload: Buffer, qos: 0 | 1) {
      return new Promise<'accepted'>((resolve, reject) => {
        calls.push({ topic, qos, resolve: () => resolve('accepted'), reject });
      });
    },
  };
}

function message(topic: string, qos: 0 | 1, acks: string[], stale = false): InboundMessage {
  return {
    topic,
    payload: Buffer.from('{}'),
    dup: false,
    qos,
    stale,
    ack: () => acks.push(topic),
  };
}

function setup(options: { retryDelayMs?: number } = {}) {
  const registry = new Registry();
  const dropped = new Counter({
    name: 'dropped_total',
    help: 'h',
    labelNames: ['reason'],
    registers: [registry],
  });
  const target = fakeTarget();
  const admission = new MqttAdmission({ target, dropped, log, ...options });
  const drops = async (): Promise<Record<string, number>> =>
    Object.fromEntries(
      (await dropped.get()).values.map((v) => [v.labels.reason as string, v.value]),
    );
  return { target, admission, drops };
}

describe('MqttAdmission', () => {
  it('drops QoS 0 past the bound and counts it; lets it in while there is room', async () => {
    const { target, admission, drops } = setup();
    admission.receive(message('a', 0, []));
    assert.equal(target.calls.length, 1);
    target.room = false;
    admission.receive(message('b', 0, []));
    admission.receive(message('c', 0, []));
    assert.equal(target.calls.length, 1, 'nothing more reached the pipeline');
    target.room = true;
    admission.receive(message('d', 0, []));
    target.calls[1]?.reject(new IngestQueueFullError(10, 10));
    admission.receive(message('e', 0, []));
    target.calls[2]?.reject(new DlqTimeoutError(5));
    await tick();
    const counted = await drops();
    assert.equal(counted.queue_full, 3);
    assert.equal(counted.dlq_timeout, 1);
    assert.equal(counted.stopping ?? 0, 0);
  });

  it('holds QoS 1 unacknowledged while there is no room, then lets it in oldest first', async () => {
    const { target, admission } = setup();
    const acks: string[] = [];
    target.room = false;
    for (const t of ['m1', 'm2', 'm3']) admission.receive(message(t, 1, acks));
    assert.equal(admission.waiting, 3);
    assert.equal(target.calls.length, 0);
    target.room = true;
    // A message arriving while others wait queues behind them even though there is room now.
    admission.receive(message('m4', 1, acks));
    assert.equal(target.calls.length, 0);
    admission.drain();
    assert.deepEqual(
      target.calls.map((c) => c.topic),
      ['m1', 'm2', 'm3', 'm4'],
    );
    assert.equal(admission.waiting, 0);
    for (const c of target.calls) c.resolve();
    await tick();
    assert.deepEqual(acks, ['m1', 'm2', 'm3', 'm4'], 'acknowledged only once in Kafka');
  });

  it('lets in only as many waiting QoS 1 messages as there is room for', () => {
    const { target, admission } = setup();
    target.room = false;
    for (const t of ['m1', 'm2', 'm3']) admission.receive(message(t, 1, []));
    let budget = 2;
    target.hasRoom = () => budget-- > 0;
    admission.drain();
    assert.deepEqual(
      target.calls.map((c) => c.topic),
      ['m1', 'm2'],
    );
    assert.equal(admission.waiting, 1);
  });

  it('skips a waiting message whose connection is gone (the broker redelivers it)', () => {
    const { target, admission } = setup();
    target.room = false;
    admission.receive(message('gone', 1, [], true));
    admission.receive(message('live', 1, []));
    target.room = true;
    admission.drain();
    assert.deepEqual(
      target.calls.map((c) => c.topic),
      ['live'],
    );
  });

  it('tries a QoS 1 message again after a retriable failure, acknowledging only the success', async () => {
    const { target, admission } = setup({ retryDelayMs: 5 });
    const acks: string[] = [];
    admission.receive(message('bad', 1, acks));
    target.calls[0]?.reject(new DlqTimeoutError(100));
    await tick(20);
    assert.equal(target.calls.length, 2, 'tried again');
    assert.deepEqual(acks, []);
    target.calls[1]?.reject(new DependencyUnavailableError('kafka', 'down'));
    await tick(30);
    assert.equal(target.calls.length, 3, 'and again, after a longer pause');
    target.calls[2]?.resolve();
    await tick();
    assert.deepEqual(acks, ['bad']);
  });

  it('leaves a QoS 1 message unacknowledged after an error no retry fixes', async () => {
    const { target, admission } = setup({ retryDelayMs: 1 });
    const acks: string[] = [];
    admission.receive(message('bug', 1, acks));
    target.calls[0]?.reject(new TypeError('a bug'));
    await tick(20);
    assert.equal(target.calls.length, 1);
    assert.deepEqual(acks, []);
  });

  it('takes nothing more once stopped; waiting messages stay with the broker', async () => {
    const { target, admission, drops } = setup({ retryDelayMs: 5 });
    target.room = false;
    admission.receive(message('w', 1, []));
    target.room = true;
    admission.receive(message('q0', 0, []));
    admission.stop();
    admission.drain();
    admission.receive(message('late1', 1, []));
    admission.receive(message('late0', 0, []));
    assert.equal(admission.waiting, 0);
    assert.deepEqual(
      target.calls.map((c) => c.topic),
      ['q0'],
      'only what came before the stop',
    );
    assert.equal((await drops()).stopping, 1);
  });
});
