import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { coVisits } from '../../../store/online-neighbours.js';
import { mergeLists } from '../../../serving/scored-list.js';

describe('online co-visitation', () => {
  it("pairs each applied event with the user's previous distinct items, newest first", () => {
    const events = [
      { userId: 'u', itemId: 'c', ts: 1 },
      { userId: 'v', itemId: 'x', ts: 2 },
      { userId: 'u', itemId: 'd', ts: 3 },
      { userId: 'u', itemId: 'c', ts: 4 },
      { userId: 'u', itemId: 'e', ts: 5 },
    ];
    const prior = new Map([['u', ['b', 'a']]]);
    const visits = coVisits(events, (i) => i !== 2, prior, 2);
    assert.deepEqual(visits, [
      { itemId: 'c', previous: ['b', 'a'], ts: 1 },
      { itemId: 'x', previous: [], ts: 2 },
      // Event 2 (d) was not applied: it is not a co-visit and does not move the window.
      { itemId: 'c', previous: ['b'], ts: 4 },
      { itemId: 'e', previous: ['c', 'b'], ts: 5 },
    ]);
  });

  it('merges batch and online lists keeping the higher score, best first', () => {
    const merged = mergeLists(
      { ids: ['a', 'b', 'c'], scores: [1, 0.5, 0.1] },
      { ids: ['c', 'd', 'b'], scores: [1, 0.5, 0.2] },
    );
    assert.deepEqual(merged.ids, ['a', 'c', 'b', 'd']);
    assert.deepEqual(Array.from(merged.scores), [1, 1, 0.5, 0.5]);
  });
});
