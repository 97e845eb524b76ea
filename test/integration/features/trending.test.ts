/**
 * Trending on a real Redis (its own database, flushed, since the windows are global): sliding
 * window counts overall and per category, buckets retired as time passes, and exactly-once
 * counting when a chunk is redelivered.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { TrendingStore, type TrendingRecord } from '../../../store/trending.js';
import { config, requireServices } from '../harness.js';

const MIN = 60_000;
const NOW = 1_764_000_000_000 - (1_764_000_000_000 % (60 * MIN)); // on an hour boundary

describe('trending windows (real Redis)', () => {
  let redis: Redis;
  let store: TrendingStore;
  before(async () => {
    redis = new Redis(`${config.redis.url}/9`, { lazyConnect: true, maxRetriesPerRequest: 1 });
    // 1 h in 6 buckets of 10 min, and 2 h in 4 of 30 min.
    store = new TrendingStore(redis, { windowsSec: [3600, 7200], buckets: 6 });
  });
  after(() => redis.disconnect());

  let offset = 0;
  const rec = (itemId: string, category: string | null, ts: number): TrendingRecord => ({
    itemId,
    category,
    ts,
    offset: String(++offset),
  });

  it('counts per window and category, retires old buckets, and counts a redelivery once', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    await redis.flushdb();
    const chunk1 = [
      rec('a', 'X', NOW - 50 * MIN),
      rec('a', 'X', NOW - 50 * MIN),
      rec('b', 'Y', NOW - 5 * MIN),
      rec('c', null, NOW - 5 * MIN),
    ];
    await store.apply('t', 0, chunk1, NOW);
    await store.apply('t', 0, chunk1, NOW); // redelivered: nothing changes
    await store.apply('t', 1, [rec('b', 'Y', NOW - 1 * MIN), rec('b', 'Y', NOW + 60 * MIN)], NOW);
    assert.deepEqual(await store.top(3600, null, 10), [
      ['b', 3],
      ['a', 2],
      ['c', 1],
    ]);
    assert.deepEqual(await store.top(3600, 'X', 10), [['a', 2]]);
    assert.deepEqual(await store.top(7200, 'Y', 1), [['b', 3]]);

    // 15 minutes on, the 1 h window has lost the bucket that held a's events; 2 h keeps them.
    await store.advance(NOW + 15 * MIN);
    assert.deepEqual(await store.top(3600, null, 10), [
      ['b', 3],
      ['c', 1],
    ]);
    assert.deepEqual(await store.top(3600, 'X', 10), []);
    assert.deepEqual(await store.top(7200, 'X', 10), [['a', 2]]);
    // An event older than the window is not counted (it could never be subtracted).
    await store.apply('t', 0, [rec('a', 'X', NOW - 59 * MIN)], NOW + 15 * MIN);
    assert.deepEqual(await store.top(3600, 'X', 10), []);

    // Three hours on, everything has left both windows and no bucket keys remain.
    await store.advance(NOW + 180 * MIN);
    assert.deepEqual(await store.top(3600, null, 10), []);
    assert.deepEqual(await store.top(7200, null, 10), []);
    const left = (await redis.keys('{trend}:w*')).filter((k) => !k.endsWith(':idx'));
    assert.deepEqual(left, []);
  });
});
