/**
 * The poison-record algorithm (`stream/poison.ts`) and the error classes it goes by
 * (`core/errors.ts`), with a handle that fails on chosen records; the real Redis errors and the
 * real roles are in test/integration/stream/poison.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  classifyError,
  DependencyUnavailableError,
  RecsysError,
  type ErrorClass,
} from '../../../core/index.js';
import { applyChunk, failureReason, PartialChunkError } from '../../../stream/poison.js';
import type { ChunkEnd, ConsumedRecord, RejectedRecord } from '../../../stream/records.js';

/** An ioredis server reply error as the client builds it. */
function reply(message: string): Error {
  const err = new Error(message);
  err.name = 'ReplyError';
  return err;
}

describe('classifyError', () => {
  it('sorts the errors consumers meet', () => {
    const cases: [unknown, ErrorClass][] = [
      [reply('WRONGTYPE Operation against a key holding the wrong kind of value'), 'permanent'],
      [
        reply("ERR user_script:1: attempt to index local 't' (a nil value) script: e6"),
        'permanent',
      ],
      [reply("OOM command not allowed when used memory > 'maxmemory'. script: e6"), 'resource'],
      [reply('LOADING Redis is loading the dataset in memory'), 'retriable'],
      [reply('BUSY Redis is busy running a script.'), 'retriable'],
      [reply("READONLY You can't write against a read only replica."), 'retriable'],
      [reply('TRYAGAIN Multiple keys request during rehashing of slot'), 'retriable'],
      [
        Object.assign(new Error('Reached the max retries'), { name: 'MaxRetriesPerRequestError' }),
        'retriable',
      ],
      [new Error('Connection is closed.'), 'retriable'],
      // A Redis Cluster failing over or unreachable: wait, never dead-letter.
      [reply('CLUSTERDOWN The cluster is down'), 'retriable'],
      [new Error('Too many Cluster redirections. Last error: Error: CLUSTERDOWN'), 'retriable'],
      [new Error('None of startup nodes is available'), 'retriable'],
      [
        Object.assign(new Error('Failed to refresh'), { name: 'ClusterAllFailedError' }),
        'retriable',
      ],
      [reply("CROSSSLOT Keys in request don't hash to the same slot"), 'permanent'],
      [Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), 'retriable'],
      [Object.assign(new Error('no space'), { code: 'ENOSPC' }), 'retriable'],
      [
        Object.assign(new Error('x'), { name: 'KafkaJSConnectionError', retriable: true }),
        'retriable',
      ],
      [
        Object.assign(new Error('x'), { name: 'KafkaJSNumberOfRetriesExceeded', retriable: false }),
        'retriable',
      ],
      [
        Object.assign(new Error('x'), { name: 'KafkaJSProtocolError', type: 'MESSAGE_TOO_LARGE' }),
        'permanent',
      ],
      [new DependencyUnavailableError('redis', 'down'), 'retriable'],
      [new RecsysError('RECSYS_CATALOG_INVALID', 'bad'), 'permanent'],
      [new TypeError('x is undefined'), 'fatal'],
      [new Error('something else'), 'unknown'],
    ];
    for (const [err, want] of cases) {
      assert.equal(classifyError(err), want, (err as Error).message);
    }
  });

  it('names a stable reason per kind of failure', () => {
    assert.equal(failureReason(reply('WRONGTYPE Operation against a key')), 'redis_wrongtype');
    assert.equal(
      failureReason(reply('ERR user_script:3: attempt to compare')),
      'redis_script_error',
    );
    assert.equal(
      failureReason(reply("OOM command not allowed when used memory > 'maxmemory'.")),
      'redis_oom',
    );
    assert.equal(failureReason(reply('ERR unknown command')), 'redis_error');
    assert.equal(
      failureReason(new RecsysError('RECSYS_ES_REQUEST_REFUSED', 'x')),
      'es_request_refused',
    );
    assert.equal(failureReason(new Error('x')), 'handle_failed');
  });
});

const END: ChunkEnd = { topic: 't', partition: 0, lastOffset: '9' };
const chunk = (n: number): ConsumedRecord<number>[] =>
  Array.from({ length: n }, (_, i) => ({
    topic: 't',
    partition: 0,
    offset: String(i),
    key: `u${i}`,
    value: i,
    timestamp: 1000 + i,
    raw: Buffer.from([i]),
  }));

/** Runs applyChunk with `handle`; returns what was done, in order, and what was dead-lettered. */
async function runChunk(
  records: ConsumedRecord<number>[],
  handle: (part: number[], end: string) => void,
  options: { deferred?: boolean; signal?: AbortSignal } = {},
) {
  const calls: { part: number[]; end: string }[] = [];
  const dead: RejectedRecord[] = [];
  const classes: ErrorClass[] = [];
  await applyChunk<number>(
    {
      handle: async (part, end) => {
        calls.push({ part: part.map((r) => r.value), end: end.lastOffset });
        handle(
          part.map((r) => r.value),
          end.lastOffset,
        );
      },
      reject: async (r) => void dead.push(...r),
      policy: { recordAttempts: 3, boundedAttempts: 4 },
      signal: options.signal ?? new AbortController().signal,
      deferred: options.deferred ?? false,
      onFailure: (_err, c) => void classes.push(c),
      onWait: () => undefined,
    },
    records,
    END,
  );
  return { calls, dead, classes };
}

describe('applyChunk', () => {
  it('splits a chunk down to the bad record, applies the rest in order and dead-letters it', async () => {
    const done: number[] = [];
    const { dead, calls } = await runChunk(
      chunk(10),
      (part) => {
        if (part.includes(6)) throw reply('WRONGTYPE Operation against a key');
        done.push(...part);
      },
      { deferred: true },
    );
    assert.deepEqual(done, [0, 1, 2, 3, 4, 5, 7, 8, 9]);
    assert.equal(dead.length, 1);
    assert.equal(dead[0]?.offset, '6');
    assert.equal(dead[0]?.reason, 'redis_wrongtype');
    assert.deepEqual(dead[0]?.value, Buffer.from([6]));
    // The single record had 3 attempts; a deferred role last hears of the chunk's end.
    assert.equal(calls.filter((c) => c.part.length === 1 && c.part[0] === 6).length, 3);
    assert.deepEqual(calls.at(-1), { part: [], end: '9' });
    // Each part ends at its own last record, so nothing past a pending record is done early.
    for (const c of calls.slice(0, -1)) assert.equal(c.end, String(c.part.at(-1)));
  });

  it('retries only the records a partial failure names', async () => {
    const done: number[] = [];
    let first = true;
    const { dead, calls } = await runChunk(chunk(6), (part) => {
      if (first) {
        first = false;
        done.push(...part.filter((v) => v !== 2 && v !== 4));
        throw new PartialChunkError(
          chunk(6).filter((r) => r.value === 2 || r.value === 4),
          reply('ERR user_script:12: attempt to compare nil'),
        );
      }
      if (part.includes(4)) throw reply('ERR user_script:12: attempt to compare nil');
      done.push(...part);
    });
    assert.deepEqual(done.sort(), [0, 1, 2, 3, 5]);
    assert.deepEqual(
      dead.map((d) => [d.offset, d.reason]),
      [['4', 'redis_script_error']],
    );
    // Never again the records the partial failure said were done.
    assert.ok(calls.slice(1).every((c) => c.part.every((v) => v === 2 || v === 4)));
  });

  it('tells a deferred role where the chunk ends after a partial failure that then succeeds', async () => {
    let first = true;
    const { calls, dead } = await runChunk(
      chunk(10),
      () => {
        if (!first) return;
        first = false;
        throw new PartialChunkError(chunk(10).slice(3, 4), reply('ERR user_script:1: x'));
      },
      { deferred: true },
    );
    assert.deepEqual(dead, []);
    assert.deepEqual(calls.slice(1), [
      { part: [3], end: '3' },
      { part: [], end: '9' },
    ]);
  });

  it('waits out a retriable error without giving anything up', async () => {
    let failures = 3;
    const { dead, classes } = await runChunk(chunk(4), () => {
      if (failures-- > 0) throw new DependencyUnavailableError('redis', 'down');
    });
    assert.deepEqual(dead, []);
    assert.deepEqual(classes, ['retriable', 'retriable', 'retriable']);
  });

  it('gives OOM a bounded number of attempts, then dead-letters what still fails', async () => {
    const oom = reply("OOM command not allowed when used memory > 'maxmemory'.");
    const { dead, classes } = await runChunk(chunk(2), () => {
      throw oom;
    });
    assert.deepEqual(
      dead.map((d) => d.reason),
      ['redis_oom', 'redis_oom'],
    );
    // 4 on the chunk, then 3 per single record.
    assert.equal(classes.length, 4 + 2 * 3);
  });

  it('stops on a programming error instead of dead-lettering', async () => {
    await assert.rejects(
      runChunk(chunk(3), () => {
        throw new TypeError('cannot read properties of undefined');
      }),
      TypeError,
    );
  });
});
