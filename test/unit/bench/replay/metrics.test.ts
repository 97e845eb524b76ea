import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  percentiles,
  rankMetrics,
  summarize,
  type Outcome,
} from '../../../../bench/replay/metrics.js';

const close = (actual: number, expected: number, what: string, eps = 1e-9): void =>
  assert.ok(Math.abs(actual - expected) < eps, `${what}: ${actual} != ${expected}`);

describe('replay metrics', () => {
  it('HR, MRR and NDCG of ranks [0, 2, miss, 19, 20] at K=20, computed by hand', () => {
    const m = rankMetrics([0, 2, null, 19, 20], 20);
    // Hits: ranks 0, 2 and 19; rank 20 is the 21st place, outside the top 20.
    assert.equal(m.events, 5);
    assert.equal(m.hits, 3);
    close(m.hr, 3 / 5, 'HR');
    // 1/(r+1): 1 + 1/3 + 1/20 = 1.38333...
    close(m.mrr, (1 + 1 / 3 + 1 / 20) / 5, 'MRR');
    close(m.mrr, 0.2766667, 'MRR (decimal)', 1e-6);
    // 1/log2(r+2): 1 + 1/log2(4) + 1/log2(21) = 1 + 0.5 + 0.227670...
    close(m.ndcg, (1 + 0.5 + 1 / Math.log2(21)) / 5, 'NDCG');
    close(m.ndcg, 0.345534, 'NDCG (decimal)', 1e-6);
  });

  it('K cuts: the same ranks at K=1 and K=3', () => {
    assert.deepEqual(rankMetrics([0, 2, null, 19, 20], 1), {
      events: 5,
      hits: 1,
      hr: 0.2,
      mrr: 0.2,
      ndcg: 0.2,
    });
    const m = rankMetrics([0, 2, null, 19, 20], 3);
    close(m.hr, 2 / 5, 'HR@3');
    close(m.mrr, (1 + 1 / 3) / 5, 'MRR@3');
  });

  it('no events: zeros, not NaN', () => {
    assert.deepEqual(rankMetrics([], 20), { events: 0, hits: 0, hr: 0, mrr: 0, ndcg: 0 });
  });

  it('summarize splits cold/warm and Nth buckets, counts sources, consumed slots, coverage', () => {
    const o = (
      rank: number | null,
      nth: number,
      cold: boolean,
      source: string | null,
    ): Outcome => ({
      rank,
      nth,
      cold,
      source,
      shown: 4,
      consumedShown: cold ? 0 : 1,
    });
    const s = summarize(
      [
        o(0, 1, true, 'popularity'),
        o(null, 2, true, null),
        o(1, 1, false, 'covis'),
        o(3, 7, false, 'covis'),
      ],
      20,
      10,
      40,
    );
    close(s.hr, 0.75, 'HR');
    close(s.cold.hr, 0.5, 'cold HR');
    close(s.warm.hr, 1, 'warm HR');
    assert.equal(s.byNth['1']?.events, 2);
    assert.equal(s.byNth['2-5']?.events, 1);
    assert.equal(s.byNth['6-20']?.hits, 1);
    assert.equal(s.byNth['101+']?.events, 0);
    assert.deepEqual(s.hitsBySource, { popularity: 1, covis: 2 });
    close(s.consumedShare, 2 / 16, 'consumed share');
    close(s.coverage, 0.25, 'coverage');
  });

  it('percentiles by nearest rank', () => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i);
    assert.deepEqual(percentiles(values), { p50: 50, p99: 99 });
    assert.ok(Number.isNaN(percentiles([]).p50));
  });
});
