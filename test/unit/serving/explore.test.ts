import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../../core/index.js';
import type { FeedCaches } from '../../../serving/feed/caches.js';
import {
  exploreCount,
  exploreNewItems,
  FIRST_EXPLORE_SLOT,
  insertExplored,
  pick,
  seededRandom,
} from '../../../serving/explore.js';
import { ItemTable } from '../../../serving/item-table.js';
import type { SessionFeatures } from '../../../store/session-features.js';

const ranked = (n: number) =>
  Array.from({ length: n }, (_, i) => ({
    itemId: `r${i}`,
    score: n - i,
    source: 'batch',
    categoryL1: null as string | null,
  }));

describe('exploration of new items', () => {
  it('gives the share of the slots after the first ones, exactly in expectation', () => {
    // 0.05 of the 18 slots after the first two: 0.9 expected, one slot when u < 0.9.
    assert.equal(exploreCount(0.05, 20, 0.99), 0);
    assert.equal(exploreCount(0.05, 20, 0.91), 0);
    assert.equal(exploreCount(0.05, 20, 0.89), 1);
    assert.equal(exploreCount(0.05, 20, 0), 1);
    assert.equal(exploreCount(0.5, 20, 0.99), 9);
    assert.equal(exploreCount(0.5, FIRST_EXPLORE_SLOT, 0), 0);
    const rand = seededRandom('share');
    let total = 0;
    for (let i = 0; i < 20_000; i++) total += exploreCount(0.05, 20, rand());
    const share = total / (20_000 * 18);
    assert.ok(Math.abs(share - 0.05) < 0.003, `measured share ${share}`);
  });

  it('draws the same for the same seed and differently for another', () => {
    const a = seededRandom('u1:100');
    const b = seededRandom('u1:100');
    const c = seededRandom('u1:101');
    const xs = [a(), a(), a()];
    assert.deepEqual(xs, [b(), b(), b()]);
    assert.notDeepEqual(xs, [c(), c(), c()]);
    for (const x of xs) assert.ok(x >= 0 && x < 1);
  });

  it('picks distinct items of the pool', () => {
    const picked = pick(['a', 'b', 'c', 'd'], 3, seededRandom('p'));
    assert.equal(new Set(picked).size, 3);
    for (const id of picked) assert.ok(['a', 'b', 'c', 'd'].includes(id));
    assert.deepEqual(pick(['a'], 3, seededRandom('p')), ['a']);
  });

  it('inserts after the first slots, keeps the length and the order of scores', () => {
    const items = ranked(10);
    const picked = [
      { itemId: 'n1', source: 'explore', categoryL1: 'c' },
      { itemId: 'n2', source: 'explore', categoryL1: 'c' },
    ];
    const out = insertExplored(items, picked, seededRandom('x'));
    assert.equal(out.length, 10);
    assert.deepEqual(
      out.slice(0, FIRST_EXPLORE_SLOT).map((i) => i.itemId),
      ['r0', 'r1'],
    );
    assert.deepEqual(
      out
        .filter((i) => i.source === 'explore')
        .map((i) => i.itemId)
        .sort(),
      ['n1', 'n2'],
    );
    const rest = out.filter((i) => i.source !== 'explore').map((i) => i.itemId);
    assert.deepEqual(rest, ['r0', 'r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7'], 'ranked order kept');
    for (let i = 1; i < out.length; i++) {
      assert.ok((out[i] as { score: number }).score <= (out[i - 1] as { score: number }).score);
    }
  });

  it("explores the user's top category, skipping consumed, shown and unavailable items", async () => {
    const config = loadConfig({ RECSYS_ENV: 'development', RECSYS_FEED_EXPLORE_SHARE: '0.5' });
    const table = new ItemTable(1);
    const reads: (string | null)[] = [];
    const pools = new Map<string | null, string[]>([
      ['shoes', ['s-new', 's-seen', 's-gone', 'r3']],
      [null, ['any1', 'any2', 'any3', 'any4', 'any5', 'any6', 'any7', 'any8', 'any9']],
    ]);
    const caches = {
      newItems: async (category: string | null) => {
        reads.push(category);
        return pools.get(category) ?? [];
      },
      readFacts: async (t: ItemTable, keys: ArrayLike<number>, n: number) => {
        for (let i = 0; i < n; i++) {
          const k = keys[i] as number;
          t.known[k] = 1;
          t.available[k] = t.ids[k] === 's-gone' ? 0 : 1;
        }
      },
    } as unknown as FeedCaches;
    const session = {
      affinities: [['shoes', 3]],
      consumed: ['s-seen'],
      purchased: [],
      recent: [],
    } as unknown as SessionFeatures;
    const out = await exploreNewItems({ config, caches }, 'u1', session, table, ranked(20), 0);
    const explored = out.filter((i) => i.source === 'explore').map((i) => i.itemId);
    assert.equal(explored.length, 9);
    assert.ok(explored.includes('s-new'), 'the top category first');
    for (const id of ['s-seen', 's-gone', 'r3']) assert.ok(!explored.includes(id), id);
    assert.deepEqual(reads, ['shoes', null], 'too few in the category: the catalog as well');
    const off = loadConfig({ RECSYS_ENV: 'development', RECSYS_FEED_EXPLORE_SHARE: '0' });
    const same = ranked(20);
    assert.equal(
      await exploreNewItems({ config: off, caches }, 'u1', session, table, same, 0),
      same,
    );
  });
});
