import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger, loadConfig } from '../../../core/index.js';
import { FeedCaches, type FeedStores } from '../../../serving/feed/caches.js';
import type { ScoredList } from '../../../serving/scored-list.js';

/** FeedCaches over an online store that answers from `lists` and counts its reads. */
function cachesWith(lists: Map<string, ScoredList>) {
  const reads: string[] = [];
  let fail = false;
  const online = {
    read: async (ids: readonly string[]) => {
      reads.push(...ids);
      if (fail) throw new Error('redis down');
      return ids.map((id) => lists.get(id) ?? { ids: [], scores: [] });
    },
  };
  const stores = { online } as unknown as FeedStores;
  const caches = new FeedCaches(
    stores,
    loadConfig({ RECSYS_ENV: 'development' }),
    createLogger('silent', 'test'),
  );
  return {
    caches,
    reads,
    failReads: (v: boolean) => {
      fail = v;
    },
  };
}

const settle = () => new Promise((r) => setImmediate(r));

test('online neighbours: the first read waits, later ones answer from memory and refresh in the background', async () => {
  const lists = new Map<string, ScoredList>([['a', { ids: ['b'], scores: [1] }]]);
  const { caches, reads } = cachesWith(lists);
  const t = 1_000_000;
  const first = await caches.onlineNeighbours(['a', 'x'], t);
  assert.deepEqual([...first.keys()], ['a'], 'items without neighbours are absent');
  assert.deepEqual(reads, ['a', 'x']);

  // In memory: synchronous, no read.
  const again = caches.onlineNeighbours(['a'], t + 100);
  assert.ok(again instanceof Map);
  assert.equal(reads.length, 2);

  // Past the period: the old list answers at once, one background read (not one per request).
  lists.set('a', { ids: ['c', 'b'], scores: [1, 0.5] });
  const stale = caches.onlineNeighbours(['a'], t + 10_000) as Map<string, ScoredList>;
  caches.onlineNeighbours(['a'], t + 10_001);
  assert.deepEqual(stale.get('a')?.ids, ['b']);
  assert.equal(reads.length, 3);
  await settle();
  const fresh = caches.onlineNeighbours(['a'], t + 10_002) as Map<string, ScoredList>;
  assert.deepEqual(fresh.get('a')?.ids, ['c', 'b']);
});

test('online neighbours: a failed first read answers without them, and the next request reads again', async () => {
  const { caches, reads, failReads } = cachesWith(new Map([['a', { ids: ['b'], scores: [1] }]]));
  failReads(true);
  const none = await caches.onlineNeighbours(['a'], 1);
  assert.equal(none.size, 0);
  failReads(false);
  const some = await caches.onlineNeighbours(['a'], 2);
  assert.deepEqual(some.get('a')?.ids, ['b']);
  assert.equal(reads.length, 2);
});

test('mergeNeighbours: batch and online merged per item, the merge reused while both lists are the same', () => {
  const { caches } = cachesWith(new Map());
  const batchA: ScoredList = { ids: ['x', 'y'], scores: [1, 0.4] };
  const onlineA: ScoredList = { ids: ['y', 'z'], scores: [1, 0.2] };
  const onlineB: ScoredList = { ids: ['q'], scores: [1] };
  const batch = new Map([['a', batchA]]);
  const online = new Map([
    ['a', onlineA],
    ['b', onlineB],
  ]);
  const merged = caches.mergeNeighbours(batch, online);
  assert.deepEqual(merged.get('a')?.ids, ['x', 'y', 'z']);
  assert.deepEqual(Array.from(merged.get('a')?.scores ?? []), [1, 1, 0.2]);
  assert.equal(merged.get('b'), onlineB, 'an item with online neighbours only keeps its list');
  assert.equal(caches.mergeNeighbours(batch, online).get('a'), merged.get('a'), 'reused');
  const onlineA2: ScoredList = { ids: ['w'], scores: [1] };
  const next = caches.mergeNeighbours(batch, new Map([['a', onlineA2]]));
  assert.deepEqual(next.get('a')?.ids, ['w', 'x', 'y'], 'equal scores in id order');
  assert.equal(caches.mergeNeighbours(batch, new Map()), batch, 'no online lists: the batch map');
});

test('batch lists: neighbours and EASE weights are read once per version each, apart', async () => {
  const reads: string[] = [];
  const store = (kind: string, lists: Record<string, ScoredList>) => async (id: string) => {
    reads.push(`${kind}:${id}`);
    return lists[id] ?? { ids: [], scores: [] };
  };
  const candidates = {
    neighbours: store('nb', { a: { ids: ['b'], scores: [1] } }),
    ease: store('ease', { a: { ids: ['c'], scores: [0.25] }, d: { ids: ['a'], scores: [0.5] } }),
  };
  const caches = new FeedCaches(
    { candidates } as unknown as FeedStores,
    loadConfig({ RECSYS_ENV: 'development' }),
    createLogger('silent', 'test'),
  );
  const state = caches.stateFor(3);
  const nb = await caches.neighbours(['a', 'd'], state);
  const ease = await caches.neighbours(['a', 'd'], state, 'ease');
  assert.deepEqual(
    [...nb].map(([k, l]) => [k, l.ids]),
    [['a', ['b']]],
  );
  assert.deepEqual(
    [...ease].map(([k, l]) => [k, l.ids]),
    [
      ['a', ['c']],
      ['d', ['a']],
    ],
  );
  // Both kinds, and the absence of a list, come from memory now.
  await caches.neighbours(['a', 'd'], state);
  await caches.neighbours(['a', 'd'], state, 'ease');
  assert.deepEqual(reads, ['nb:a', 'nb:d', 'ease:a', 'ease:d']);
});

test("a version's blend weights come with its popular list, and a failed read is tried again", async () => {
  let metaFails = true;
  const candidates = {
    popular: async () => ({ ids: ['i1'], scores: [3] }),
    meta: async (version: number) => {
      if (metaFails) throw new Error('redis down');
      return version === 7 ? { blend_ease: '0.5', blend_covis_damping: '0.2' } : {};
    },
  };
  const caches = new FeedCaches(
    { candidates } as unknown as FeedStores,
    loadConfig({ RECSYS_ENV: 'development' }),
    createLogger('silent', 'test'),
  );
  const state = caches.stateFor(7);
  assert.deepEqual(state.blend, { ease: 0, covisDamping: 0 }, 'the plain blend before the read');
  await assert.rejects(caches.overall(state), /redis down/);
  metaFails = false;
  assert.deepEqual((await caches.overall(state)).ids, ['i1']);
  assert.deepEqual(state.blend, { ease: 0.5, covisDamping: 0.2 });
  const older = caches.stateFor(6);
  await caches.overall(older);
  assert.deepEqual(older.blend, { ease: 0, covisDamping: 0 }, 'a version without weights');
});
