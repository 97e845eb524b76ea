import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { diffRows, TABLE_KEYS } from '../../../batch/engine-parity.js';

const key = TABLE_KEYS.neighbours as readonly string[];
const a = [
  { itemId: 'i1', neighbourId: 'i2', score: 1, rank: 1n },
  { itemId: 'i1', neighbourId: 'i3', score: 0.4767705823743851, rank: 2n },
  { itemId: 'i2', neighbourId: 'i1', score: 1, rank: 1n },
];

describe('engine parity: diffRows', () => {
  it('calls tables equal across integer widths, row order and last-bit float differences', () => {
    const b = [
      { itemId: 'i2', neighbourId: 'i1', score: 1, rank: 1 },
      { itemId: 'i1', neighbourId: 'i3', score: 0.4767705823743852, rank: 2 },
      { itemId: 'i1', neighbourId: 'i2', score: 1, rank: 1 },
    ];
    const d = diffRows('neighbours', a, b, key);
    assert.equal(d.equal, true, JSON.stringify(d));
    assert.ok(d.maxRelDiff > 0 && d.maxRelDiff < 1e-15);
  });

  it('finds a score beyond the tolerance, a swapped rank, a missing row, a changed string', () => {
    const score = diffRows('neighbours', a, [a[0]!, { ...a[1]!, score: 0.4768 }, a[2]!], key);
    assert.equal(score.equal, false);
    assert.deepEqual(score.mismatches[0]?.column, 'score');
    assert.ok(score.maxRelDiff > 1e-9);

    const rank = diffRows(
      'neighbours',
      a,
      [{ ...a[0]!, rank: 2n }, { ...a[1]!, rank: 1n }, a[2]!],
      key,
    );
    assert.equal(rank.equal, false);
    assert.equal(rank.mismatchCount, 2);

    const missing = diffRows('neighbours', a, a.slice(0, 2), key);
    assert.equal(missing.equal, false);
    assert.deepEqual(missing.onlyInA, ['i2|i1']);

    const renamed = diffRows('neighbours', a, [a[0]!, a[1]!, { ...a[2]!, neighbourId: 'i9' }], key);
    assert.deepEqual([renamed.onlyInA, renamed.onlyInB], [['i2|i1'], ['i2|i9']]);

    const source = diffRows(
      'user_candidates',
      [{ userId: 'u', itemId: 'i', source: 'covisit' }],
      [{ userId: 'u', itemId: 'i', source: 'category' }],
      ['userId', 'itemId'],
    );
    assert.equal(source.equal, false);
  });

  it('finds a column only one side has, and honours a looser tolerance when asked', () => {
    const extra = diffRows(
      'neighbours',
      a,
      a.map((r) => ({ ...r, best: 1 })),
      key,
    );
    assert.deepEqual([extra.equal, extra.columns], [false, ['best']]);
    const loose = diffRows('neighbours', a, [a[0]!, { ...a[1]!, score: 0.4768 }, a[2]!], key, 1e-3);
    assert.equal(loose.equal, true);
  });
});
