import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { labelsOf } from '../../../batch/logged-feeds.js';
import { logCandidates, loggedMatrix, sampled } from '../../../serving/feed/feature-log.js';
import { FEATURE_COUNT, FEATURE_NAMES } from '../../../serving/rank-features.js';

describe('feature logging', () => {
  it('logs each candidate with its own row, also in the model row order', () => {
    const n = 3;
    const matrix = new Float32Array(n * FEATURE_COUNT + 7); // pooled matrices are larger
    // Candidate i sits at matrix row at[i]; its row holds (i + 1) * 10 + column.
    const at = [2, 0, 1];
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < FEATURE_COUNT; c++) matrix[at[i]! * FEATURE_COUNT + c] = (i + 1) * 10 + c;
    }
    const logged = logCandidates(matrix, n, ['a', 'b', 'c'], at);
    assert.deepEqual(logged.itemIds, ['b', 'c', 'a']);
    assert.deepEqual(logged.featureNames, [...FEATURE_NAMES]);
    assert.equal(logged.features.length, n * FEATURE_COUNT * 4);
    const back = loggedMatrix(logged);
    assert.ok(back);
    logged.itemIds.forEach((id, r) => {
      const i = ['a', 'b', 'c'].indexOf(id);
      assert.equal(back[r * FEATURE_COUNT + 5], (i + 1) * 10 + 5, `row ${r} is ${id}'s`);
    });
    // Without an order, row i is candidate i; the copy does not follow later writes.
    const plain = logCandidates(matrix, n, ['x', 'y', 'z']);
    matrix.fill(0);
    assert.deepEqual(plain.itemIds, ['x', 'y', 'z']);
    assert.equal(loggedMatrix(plain)?.[2 * FEATURE_COUNT], 10, 'matrix row 2 held candidate 0');
  });

  it('refuses rows whose size does not match their names', () => {
    const bad = { featureNames: ['a', 'b'], itemIds: ['x'], features: Buffer.alloc(12) };
    assert.equal(loggedMatrix(bad), null);
  });

  it('samples the configured share', () => {
    assert.equal(sampled(0), false);
    assert.equal(sampled(1), true);
    let hits = 0;
    for (let i = 0; i < 20_000; i++) if (sampled(0.25)) hits++;
    assert.ok(hits > 4500 && hits < 5500, `${hits} of 20000 at 0.25`);
  });
});

describe('logged feed labels', () => {
  const ev = {
    at: Float64Array.from([100, 200, 300, 400]),
    items: ['a', 'b', 'a', 'c'],
    types: ['view', 'purchase', 'add_to_cart', 'click'] as const,
  };
  const user = { ...ev, types: [...ev.types] };

  it('grade the events after the feed and up to the bound, best grade per item', () => {
    // (100, 300]: b purchased (3), a carted (2); the view at 100 is not after the feed.
    assert.deepEqual([...(labelsOf(user, ['a', 'b', 'c', 'd'], 100, 300) ?? [])], [2, 3, 0, 0]);
    // (50, 150]: a viewed (1).
    assert.deepEqual([...(labelsOf(user, ['c', 'a'], 50, 150) ?? [])], [0, 1]);
  });

  it('are null when nothing relevant to the candidates followed', () => {
    assert.equal(labelsOf(user, ['d'], 0, 1000), null);
    assert.equal(labelsOf(user, ['a'], 400, 1000), null);
    assert.equal(labelsOf(undefined, ['a'], 0, 1000), null);
  });
});
