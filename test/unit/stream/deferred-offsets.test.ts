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

function setup(failures: (Error | null)[], committed: string | null = null) {
  const commits: TopicPartitionOffsetAndMetadata[][] = [];
  const seeks: string[] = [];
  const starts: string[] = [];
  let rejoins = 0;
  let revocations = 0;
  const role = {
    revoked: () => void (revocations += 1),
    assigned: () => Promise.resolve(),
    drain: () => Promise.resolve(),
  };
  const offsets: DeferredOffsets = new DeferredOffsets(role, log, 60_000, {
    committed: () => Promise.resolve(committed),
    // As the consumer's rejoin does (after leaving the group): the partitions are revoked.
    rejoin: () => {
      rejoins += 1;
      offsets.revoke();
    },
  });
  offsets.consumer = {
    commitOffsets: (o: TopicPartitionOffsetAndMetadata[]) => {
      commits.push(o);
      const err = failures.shift();
      return err ? Promise.reject(err) : Promise.resolve();
    },
    seek: ({ offset }: { offset: string }) => void seeks.push(offset),
  } as unknown as Consumer;
  let commit: (next: string) => void = () => undefined;
  role.assigned = ((_t: string, _p: number, start: string, c: (next: string) => void) => {
    starts.push(start);
    commit = c;
    return Promise.resolve();
  }) as typeof role.assigned;
  const assign = (fetchedOffset = committed ?? '0') =>
    offsets.assign({ topic: 't', partition: 0, fetchedOffset } as unknown as Batch, (_what, fn) =>
      fn(),
    );
  return {
    offsets,
    commits,
    seeks,
    starts,
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

  it('starts an assignment at the committed offset: a first batch elsewhere is dropped and the partition sought there', async () => {
    const s = setup([], '100');
    // A batch fetched for an earlier assignment, past the committed offset.
    assert.equal(await s.assign('160'), false);
    assert.deepEqual(s.seeks, ['100']);
    assert.deepEqual(s.starts, []);
    assert.equal(await s.assign('100'), true);
    assert.deepEqual(s.starts, ['100']);
    // Once per assignment: where kafkajs reset to (the committed offset left the log) is taken.
    s.offsets.revoke();
    assert.equal(await s.assign('40'), false);
    assert.equal(await s.assign('40'), true);
    assert.deepEqual(s.starts, ['100', '40']);
    // No commit yet: the batch's offset (the log start, fromBeginning) is the start.
    const fresh = setup([], null);
    assert.equal(await fresh.assign('0'), true);
    assert.deepEqual(fresh.seeks, []);
    await s.offsets.close();
    await fresh.offsets.close();
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
