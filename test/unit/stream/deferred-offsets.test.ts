/**
 * DeferredOffsets' commits against a stand-in consumer (pure logic): a commit that fails is put
 * back and tried again; a coordinator error, or a run of failures, asks the consumer to join its
 * group again; the role hears of the revocation and a revoked assignment's release is dropped.
 * That a real consumer finds the moved coordinator is shown by the cluster fault run.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Batch, Consumer, TopicPartitionOffsetAndMetadata } from 'kafkajs';
import { createLogger } from '../../../core/log.js';
import { DeferredOffsets, kafkaErrorType } from '../../../stream/deferred-offsets.js';

const log = createLogger('silent');

/** kafkajs' shape after its own retries: a wrapper whose cause carries the protocol type. */
function retriesExceeded(type: string): Error {
  const cause = Object.assign(new Error('The broker is not the correct coordinator'), { type });
  return new Error('retries exceeded', { cause });
}

function setup(failures: (Error | null)[]) {
  const commits: TopicPartitionOffsetAndMetadata[][] = [];
  let rejoins = 0;
  let revocations = 0;
  const role = {
    revoked: () => void (revocations += 1),
    assigned: () => Promise.resolve(),
    drain: () => Promise.resolve(),
  };
  // As the consumer's rejoin does (after leaving the group): the partitions are revoked.
  const offsets: DeferredOffsets = new DeferredOffsets(role, log, 60_000, () => {
    rejoins += 1;
    offsets.revoke();
  });
  offsets.consumer = {
    commitOffsets: (o: TopicPartitionOffsetAndMetadata[]) => {
      commits.push(o);
      const err = failures.shift();
      return err ? Promise.reject(err) : Promise.resolve();
    },
  } as unknown as Consumer;
  const batch = { topic: 't', partition: 0, fetchedOffset: '0' } as unknown as Batch;
  let commit: (next: string) => void = () => undefined;
  role.assigned = ((_t: string, _p: number, _o: string, c: (next: string) => void) => {
    commit = c;
    return Promise.resolve();
  }) as typeof role.assigned;
  const assign = () => offsets.assign(batch, (_what, fn) => fn());
  return {
    offsets,
    commits,
    assign,
    release: (next: string) => commit(next),
    rejoins: () => rejoins,
    revocations: () => revocations,
  };
}

describe('DeferredOffsets', () => {
  it('reads the protocol error type through kafkajs wrappers', () => {
    assert.equal(
      kafkaErrorType(retriesExceeded('NOT_COORDINATOR_FOR_GROUP')),
      'NOT_COORDINATOR_FOR_GROUP',
    );
    assert.equal(kafkaErrorType(new Error('socket closed')), undefined);
  });

  it('puts a failed commit back and commits it with the next try', async () => {
    const s = setup([new Error('timeout')]);
    await s.assign();
    s.release('10');
    await s.offsets.commitReleased();
    await s.offsets.commitReleased();
    assert.deepEqual(
      s.commits.map((c) => c.map((o) => o.offset)),
      [['10'], ['10']],
    );
    assert.equal(s.rejoins(), 0);
    await s.offsets.close();
  });

  it('joins the group again at once when the coordinator moved', async () => {
    const s = setup([retriesExceeded('NOT_COORDINATOR_FOR_GROUP')]);
    await s.assign();
    s.release('10');
    await s.offsets.commitReleased();
    assert.equal(s.rejoins(), 1);
    // The rejoin revoked the partitions: what the old assignment released is never committed.
    assert.equal(s.revocations(), 1);
    await s.offsets.commitReleased();
    s.release('11');
    await s.offsets.commitReleased();
    assert.equal(s.commits.length, 1);
    await s.offsets.close();
  });

  it('joins again after three failures in a row of any kind, and counts afresh after a success', async () => {
    const fail = () => new Error('request timed out');
    const s = setup([fail(), fail(), null, fail(), fail(), fail()]);
    await s.assign();
    s.release('5');
    await s.offsets.commitReleased();
    await s.offsets.commitReleased();
    assert.equal(s.rejoins(), 0);
    await s.offsets.commitReleased(); // succeeds
    for (const next of ['6', '7', '8']) {
      s.release(next);
      await s.offsets.commitReleased();
    }
    assert.equal(s.rejoins(), 1);
    await s.offsets.close();
  });
});
