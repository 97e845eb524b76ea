import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { evaluate, toMarkdown } from '../../../batch/evaluate.js';

const near = (a: number, b: number): void => assert.ok(Math.abs(a - b) < 1e-9, `${a} != ${b}`);

describe('offline metrics', () => {
  it('match hand-computed values', () => {
    // u1: relevant {b, x}; list a b c ... -> b at rank 2.
    // DCG = 1/log2(3); IDCG = 1 + 1/log2(3); recall@20 = 1/2; MRR = 1/2; hit = 1.
    // u2: relevant {a} at rank 1 -> NDCG 1, recall 1, MRR 1, hit 1.
    // u3: relevant {z}, not recommended -> all 0. u4 has no relevant items: not counted.
    const recs = new Map([
      ['u1', ['a', 'b', 'c']],
      ['u2', ['a', 'c']],
      ['u3', ['a']],
    ]);
    const rel = new Map([
      [
        'u1',
        new Map([
          ['b', 1],
          ['x', 1],
        ]),
      ],
      ['u2', new Map([['a', 1]])],
      ['u3', new Map([['z', 1]])],
      ['u4', new Map<string, number>()],
    ]);
    const m = evaluate(recs, rel, 10);
    const l3 = 1 / Math.log2(3);
    near(m.ndcg_at_10, (l3 / (1 + l3) + 1 + 0) / 3);
    near(m.recall_at_20, (0.5 + 1 + 0) / 3);
    near(m.mrr_at_20, (0.5 + 1 + 0) / 3);
    near(m.hit_rate_at_10, 2 / 3);
    near(m.coverage_at_10, 3 / 10);
    assert.equal(m.users, 3);
  });

  it('uses graded gains, and a perfect list scores 1', () => {
    const rel = new Map([
      [
        'u',
        new Map([
          ['p', 3],
          ['v', 1],
        ]),
      ],
    ]);
    near(evaluate(new Map([['u', ['p', 'v']]]), rel, 2).ndcg_at_10, 1);
    const swapped = evaluate(new Map([['u', ['v', 'p']]]), rel, 2).ndcg_at_10;
    near(swapped, (1 + 7 / Math.log2(3)) / (7 + 1 / Math.log2(3)));
  });

  it('renders a Markdown table with the best method first', () => {
    const m = evaluate(new Map([['u', ['a']]]), new Map([['u', new Map([['a', 1]])]]), 1);
    const zero = evaluate(new Map(), new Map([['u', new Map([['a', 1]])]]), 1);
    const md = toMarkdown({ popularity: zero, hybrid: m });
    const lines = md.split('\n');
    assert.match(lines[2] ?? '', /^\| hybrid \| 1\.0000 /);
    assert.match(lines[3] ?? '', /^\| popularity \| 0\.0000 /);
  });
});
