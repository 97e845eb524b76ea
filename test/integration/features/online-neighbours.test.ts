/**
 * Online co-visitation on a real Redis: both directions, newer co-visits weigh more, the set is
 * bounded, and what the store reads back is what redis-cli sees.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { onlineNeighboursKey } from '../../../store/keys.js';
import { OnlineNeighbourStore } from '../../../store/online-neighbours.js';
import { config, requireServices, run, uniq } from '../harness.js';

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 5, 1);

describe('online neighbours (real Redis)', () => {
  let redis: Redis;
  before(() => {
    redis = new Redis(config.redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  });
  after(() => redis.disconnect());

  it('records co-visits both ways, newer ones weighing more, bounded per item', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const store = new OnlineNeighbourStore(redis, { maxNeighbours: 3, halfLifeMs: DAY });
    const [a, b, c] = [uniq('a'), uniq('b'), uniq('c')];
    // b with a one day before c with a: c weighs twice as much (one half-life later).
    await store.record([{ itemId: b, previous: [a], ts: T0 }]);
    await store.record([{ itemId: c, previous: [a], ts: T0 + DAY }]);
    const [ofA, ofB] = await store.read([a, b], 10);
    assert.deepEqual(ofA?.ids, [c, b]);
    assert.ok(Math.abs((ofA?.scores[1] ?? 0) - 0.5) < 1e-9, `${ofA?.scores}`);
    assert.deepEqual(ofB?.ids, [a]);
    const cli = await run('redis-cli', ['-u', config.redis.url, 'HGETALL', onlineNeighboursKey(a)]);
    const flat = cli.stdout.trim().split('\n');
    const weights = new Map(flat.flatMap((v, i) => (i % 2 ? [] : [[v, Number(flat[i + 1])]])));
    assert.ok((weights.get(c) ?? 0) > (weights.get(b) ?? Infinity), cli.stdout);
    assert.equal(weights.size, 2);

    // Past twice the bound the weakest go: 7 neighbours of x leave the 3 newest.
    const x = uniq('x');
    const others = Array.from({ length: 7 }, (_, i) => uniq(`n${i}`));
    for (const [i, n] of others.entries()) {
      await store.record([{ itemId: n, previous: [x], ts: T0 + i * DAY }]);
    }
    const [ofX] = await store.read([x], 10);
    assert.deepEqual(ofX?.ids, [others[6], others[5], others[4]]);
    assert.ok((await redis.ttl(onlineNeighboursKey(x))) > 0);
  });

  it('weighs a pair 1/sqrt(distance) up to the window', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const [d, p1, p2, p3, p4, p5, p6] = ['d', 'p1', 'p2', 'p3', 'p4', 'p5', 'p6'].map(uniq);
    // The default window of 5 leaves p6 out.
    await new OnlineNeighbourStore(redis).record([
      { itemId: d as string, previous: [p1, p2, p3, p4, p5, p6] as string[], ts: T0 },
    ]);
    const [ofD, ofP3] = await new OnlineNeighbourStore(redis).read([d as string, p3 as string], 10);
    assert.deepEqual(ofD?.ids, [p1, p2, p3, p4, p5]);
    const want = [1, 1 / Math.SQRT2, 1 / Math.sqrt(3), 0.5, 1 / Math.sqrt(5)];
    ofD?.scores.forEach((v, i) => assert.ok(Math.abs(v - (want[i] as number)) < 1e-9, `${v}`));
    assert.deepEqual(ofP3?.ids, [d]);
    // A window of 2 pairs with the 2 nearest only.
    const [e, q1, q2, q3] = ['e', 'q1', 'q2', 'q3'].map(uniq);
    await new OnlineNeighbourStore(redis, { window: 2 }).record([
      { itemId: e as string, previous: [q1, q2, q3] as string[], ts: T0 },
    ]);
    const [ofE] = await new OnlineNeighbourStore(redis).read([e as string], 10);
    assert.deepEqual(ofE?.ids, [q1, q2]);
  });
});
