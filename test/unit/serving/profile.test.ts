import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { keyedBy, profileScores } from '../../../serving/profile.js';
import type { ScoredList } from '../../../serving/scored-list.js';

const list = (pairs: [string, number][]): ScoredList => ({
  ids: pairs.map(([id]) => id),
  scores: pairs.map(([, s]) => s),
});

describe('profile features', () => {
  it('sums each kind over all recent items, unweighted, per row', () => {
    const ease = new Map([
      [
        'r1',
        list([
          ['x', 0.5],
          ['y', 0.25],
        ]),
      ],
      ['r2', list([['x', 0.125]])],
    ]);
    const covis = new Map([
      [
        'r2',
        list([
          ['y', 1],
          ['z', 0.5],
        ]),
      ],
      ['r3', list([['y', 0.25]])],
    ]);
    const keyed = keyedBy(['x', 'y', 'z', 'w']);
    const { rowKeys } = keyed;
    const out = profileScores(['r1', 'r2', 'r3', 'no-list'], ease, covis, rowKeys, 4, keyed);
    // Nothing is left behind for the next call.
    assert.deepEqual(
      [...profileScores(['r3'], ease, covis, rowKeys, 4, keyed)],
      [0, 0, 0, 0.25, 0, 0, 0, 0],
    );
    assert.deepEqual([...out], [0.625, 0, 0.25, 1.25, 0, 0.5, 0, 0]);
  });

  it('is zero without recent items or lists, and reads only the first n rows', () => {
    const ease = new Map([['r1', list([['x', 1]])]]);
    const keyed = keyedBy(['x', 'x']);
    const { rowKeys } = keyed;
    assert.deepEqual([...profileScores([], ease, ease, rowKeys, 1, keyed)], [0, 0]);
    assert.deepEqual([...profileScores(['r1'], new Map(), new Map(), rowKeys, 1, keyed)], [0, 0]);
    assert.deepEqual([...profileScores(['r1'], ease, new Map(), rowKeys, 1, keyed)], [1, 0]);
  });

  it('takes keys beyond its scratch (a large item table)', () => {
    const ease = new Map([['r1', list([['x', 2]])]]);
    const far = {
      keysOf: (l: { ids: readonly string[] }) => Int32Array.from(l.ids, () => 5_000_000),
    };
    const out = profileScores(['r1'], ease, new Map(), [5_000_000, 7], 2, far);
    assert.deepEqual([...out], [2, 0, 0, 0]);
  });
});
