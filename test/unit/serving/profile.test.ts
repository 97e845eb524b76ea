import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { profileScores } from '../../../serving/profile.js';
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
    const out = profileScores(['r1', 'r2', 'r3', 'no-list'], ease, covis, ['x', 'y', 'z', 'w'], 4);
    assert.deepEqual([...out], [0.625, 0, 0.25, 1.25, 0, 0.5, 0, 0]);
  });

  it('is zero without recent items or lists, and reads only the first n rows', () => {
    const ease = new Map([['r1', list([['x', 1]])]]);
    assert.deepEqual([...profileScores([], ease, ease, ['x'], 1)], [0, 0]);
    assert.deepEqual([...profileScores(['r1'], new Map(), new Map(), ['x'], 1)], [0, 0]);
    assert.deepEqual([...profileScores(['r1'], ease, new Map(), ['x', 'x'], 1)], [1, 0]);
  });
});
