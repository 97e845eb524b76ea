import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  demoteFatigued,
  diversify,
  keepRows,
  mixCandidates,
  modelRowOrder,
  SOURCE_COUNT,
  shownSource,
  type CandidateRows,
  type MixInput,
} from '../../../serving/mix.js';
import { ItemTable } from '../../../serving/item-table.js';
import { EMPTY_LIST, type ScoredList } from '../../../serving/scored-list.js';
import { SOURCES } from '../../../serving/rank-features.js';
import { parseImpressions } from '../../../store/impressions.js';
import { IMPRESSIONS_OFFSET_FIELD, userImpressionsKey } from '../../../store/keys.js';

const s = (itemId: string, score: number) => ({ itemId, score });
const list = (...entries: { itemId: string; score: number }[]): ScoredList => ({
  ids: entries.map((e) => e.itemId),
  scores: entries.map((e) => e.score),
});
const empty: MixInput = {
  batch: EMPTY_LIST,
  recent: [],
  neighbours: new Map(),
  trending: [],
  popular: EMPTY_LIST,
};

/** The rows as one object per candidate: id, the scores of the sources that proposed it, source. */
function asObjects(rows: CandidateRows) {
  return Array.from({ length: rows.n }, (_, i) => {
    const scores: Record<string, number> = {};
    SOURCES.forEach((src, k) => {
      if ((rows.proposed[i] as number) & (1 << k))
        scores[src] = rows.scores[i * SOURCE_COUNT + k] as number;
    });
    return { itemId: rows.ids[i] as string, scores, source: shownSource(rows, i) };
  });
}

describe('mixCandidates', () => {
  it('keeps every source score of an item, dedupes, and attributes it to the first source', () => {
    const mixed = asObjects(
      mixCandidates(
        {
          batch: list(s('a', 0.9), s('b', 0.5)),
          recent: ['r1', 'r2'],
          neighbours: new Map([
            ['r1', list(s('b', 1), s('c', 0.5))],
            ['r2', list(s('c', 1), s('d', 0.4))],
          ]),
          trending: [list(s('c', 30), s('e', 10)), list(s('e', 12))],
          popular: list(s('a', 100), s('f', 50)),
        },
        100,
      ),
    );
    const byId = new Map(mixed.map((c) => [c.itemId, c]));
    assert.equal(mixed.length, 6);
    assert.deepEqual(byId.get('a')?.scores, { batch: 0.9, popularity: 100 });
    assert.equal(byId.get('a')?.source, 'batch');
    // covis: each list scaled to sum 1, times 0.8^position, summed: b from r1 = 1 / 1.5;
    // c = 0.5 / 1.5 + 0.8 * 1 / 1.4; d = 0.8 * 0.4 / 1.4.
    const near = (got: number | undefined, want: number) =>
      assert.ok(Math.abs((got ?? NaN) - want) < 1e-9, `${got} != ${want}`);
    near(byId.get('b')?.scores.batch, 0.5);
    near(byId.get('b')?.scores.covis, 1 / 1.5);
    near(byId.get('c')?.scores.covis, 0.5 / 1.5 + 0.8 / 1.4);
    assert.deepEqual(byId.get('c')?.scores.trending, 30);
    assert.equal(byId.get('c')?.source, 'covis');
    assert.deepEqual(Object.keys(byId.get('d')?.scores ?? {}), ['covis']);
    near(byId.get('d')?.scores.covis, (0.8 * 0.4) / 1.4);
    // The best count of an item over the trending lists.
    assert.deepEqual(byId.get('e')?.scores, { trending: 12 });
    assert.equal(byId.get('f')?.source, 'popularity');
  });

  it('caps round-robin over the sources so a long batch list cannot crowd out real time', () => {
    const batch = list(...Array.from({ length: 300 }, (_, i) => s(`b${i}`, 1 - i / 1000)));
    const mixed = asObjects(
      mixCandidates(
        {
          ...empty,
          batch,
          recent: ['x'],
          neighbours: new Map([['x', list(s('n1', 1), s('n2', 0.5))]]),
          popular: list(s('p1', 9)),
        },
        10,
      ),
    );
    assert.equal(mixed.length, 10);
    const ids = mixed.map((c) => c.itemId);
    assert.ok(ids.includes('n1') && ids.includes('n2') && ids.includes('p1'), ids.join());
    assert.equal(ids[0], 'b0');
  });

  it('a new user gets trending and popular items only', () => {
    const mixed = asObjects(
      mixCandidates({ ...empty, trending: [list(s('t', 3))], popular: list(s('p', 7)) }, 200),
    );
    assert.deepEqual(
      mixed.map((c) => [c.itemId, c.source]),
      [
        ['t', 'trending'],
        ['p', 'popularity'],
      ],
    );
    assert.deepEqual(asObjects(mixCandidates(empty, 200)), []);
  });

  it('ranks an unsorted source by score, ties in the order first proposed', () => {
    const mixed = asObjects(
      mixCandidates({ ...empty, batch: list(s('c', 0.2), s('b', 0.5), s('a', 0.5)) }, 10),
    );
    assert.deepEqual(
      mixed.map((c) => c.itemId),
      ['b', 'a', 'c'],
    );
  });

  it('sums co-visitation lists by discounted score across recent items', () => {
    const mixed = asObjects(
      mixCandidates(
        {
          ...empty,
          recent: ['r1', 'r2'],
          neighbours: new Map([
            ['r1', list(s('x', 0.3), s('y', 0.1))],
            ['r2', list(s('z', 1), s('x', 0.9))],
          ]),
        },
        10,
      ),
    );
    // r1's list sums to 0.4, r2's to 1.9 (weight 0.8): x = 0.3 / 0.4 + 0.8 * 0.9 / 1.9
    // (co-visited with both), z = 0.8 * 1 / 1.9, y = 0.1 / 0.4.
    assert.deepEqual(
      mixed.map((c) => [c.itemId, Number(c.scores.covis?.toFixed(6))]),
      [
        ['x', Number((0.75 + 0.72 / 1.9).toFixed(6))],
        ['z', Number((0.8 / 1.9).toFixed(6))],
        ['y', 0.25],
      ],
    );
  });
});

describe('mixCandidates exclusion', () => {
  it('leaves excluded items out of every source before the cap, so others take their places', () => {
    const table = new ItemTable(1);
    const input: MixInput = {
      ...empty,
      batch: list(s('a', 4), s('b', 3), s('c', 2)),
      recent: ['r'],
      neighbours: new Map([['r', list(s('b', 1), s('d', 0.5))]]),
      popular: list(s('a', 9), s('e', 8)),
    };
    const excluded = ['a', 'b'].map((id) => table.intern(id));
    const rows = mixCandidates(input, 3, table, excluded);
    assert.deepEqual(rows.ids, ['c', 'd', 'e']);
    // The next mix with the same table and no exclusion sees them again.
    assert.deepEqual(mixCandidates(input, 3, table).ids, ['a', 'b', 'd']);
  });
});

describe('keepRows', () => {
  it('compacts the rows and the aligned arrays in order', () => {
    const rows = mixCandidates(
      {
        ...empty,
        batch: list(s('a', 4), s('b', 3), s('c', 2), s('d', 1)),
        popular: list(s('c', 9)),
      },
      10,
    );
    // Mix order (round robin): a, c (popularity's first), b, d.
    const side = rows.ids.map((id) => id.toUpperCase());
    keepRows(rows, (i) => rows.ids[i] !== 'b' && rows.ids[i] !== 'd', side);
    assert.deepEqual(asObjects(rows), [
      { itemId: 'a', scores: { batch: 4 }, source: 'batch' },
      { itemId: 'c', scores: { batch: 2, popularity: 9 }, source: 'batch' },
    ]);
    assert.deepEqual(side, ['A', 'C']);
  });
});

describe('modelRowOrder', () => {
  it('groups rows by sources and catalog presence, by rank in the first source within a group', () => {
    const table = new ItemTable(1);
    const rows = mixCandidates(
      {
        ...empty,
        batch: list(s('a', 4), s('b', 3), s('c', 2), s('d', 1)),
        trending: [list(s('t1', 9), s('b', 8), s('t2', 7))],
        popular: list(s('p', 5), s('a', 1)),
      },
      10,
      table,
    );
    const known = new Uint8Array(table.size);
    for (const id of ['a', 'c', 't1', 't2', 'p']) known[table.find(id) as number] = 1;
    const at = modelRowOrder(rows, known, new Uint32Array(rows.n));
    // A permutation of 0..n-1.
    assert.deepEqual(
      Array.from(at).sort((x, y) => x - y),
      Array.from({ length: rows.n }, (_, i) => i),
    );
    // Read back in model order: each group contiguous, groups in ascending key, mix order inside.
    const inModelOrder: string[] = [];
    rows.ids.forEach((id, i) => (inModelOrder[at[i] as number] = id));
    const group = (id: string): number => {
      const i = rows.ids.indexOf(id);
      return (rows.proposed[i] as number) | (known[table.find(id) as number] ? 16 : 0);
    };
    const groups = inModelOrder.map(group);
    assert.deepEqual(
      groups,
      [...groups].sort((x, y) => x - y),
      'groups contiguous and ordered',
    );
    // Within a group, by rank in the group's first source.
    const firstRank = (id: string): number => {
      const i = rows.ids.indexOf(id);
      const b = rows.proposed[i] as number;
      return rows.sourcePos[i * SOURCE_COUNT + (31 - Math.clz32(b & -b))] as number;
    };
    for (let j = 1; j < inModelOrder.length; j++) {
      if (groups[j] === groups[j - 1]) {
        assert.ok(
          firstRank(inModelOrder[j] as string) > firstRank(inModelOrder[j - 1] as string),
          'rank order within a group',
        );
      }
    }
    // Items of the same sources are apart when only one is in the catalog: d (batch, not in the
    // catalog) comes before c (batch, in it), although the mix put c first.
    assert.ok(rows.ids.indexOf('d') > rows.ids.indexOf('c'));
    assert.ok(inModelOrder.indexOf('d') < inModelOrder.indexOf('c'));
  });
});

describe('modelRowOrder within a group', () => {
  it('follows the rank in the first source, not the mix order', () => {
    const table = new ItemTable(1);
    const rows = mixCandidates(
      {
        ...empty,
        batch: list(s('p', 3), s('x', 2), s('y', 1)),
        trending: [list(s('y', 9), s('x', 8))],
      },
      10,
      table,
    );
    // Round robin: batch's p, trending's y, then batch's x.
    assert.deepEqual(rows.ids, ['p', 'y', 'x']);
    const at = modelRowOrder(rows, new Uint8Array(table.size).fill(1), new Uint32Array(rows.n));
    // x and y share a group (batch and trending, known); batch ranks x first.
    assert.deepEqual(Array.from(at), [0, 2, 1]);
  });
});

describe('demoteFatigued', () => {
  const ranked = ['a', 'b', 'c', 'd'].map((itemId) => ({ itemId }));
  it('moves items shown threshold times or more after the rest, both groups in order', () => {
    const out = demoteFatigued(
      ranked,
      (c) => c.itemId,
      new Map([
        ['a', 3],
        ['c', 5],
        ['d', 2],
      ]),
      3,
    );
    assert.deepEqual(
      out.map((c) => c.itemId),
      ['b', 'd', 'a', 'c'],
    );
  });
  it('never demotes items the user interacted with', () => {
    const out = demoteFatigued(ranked, (c) => c.itemId, new Map([['a', 9]]), 3, ['a']);
    assert.deepEqual(
      out.map((c) => c.itemId),
      ['a', 'b', 'c', 'd'],
    );
  });
});

describe('diversify', () => {
  it('allows at most maxPerCategory of one category in the top, deferring the rest', () => {
    const ranked = [
      ...['x1', 'x2', 'x3', 'x4', 'x5'].map((itemId) => ({ itemId, categoryL1: 'x' })),
      { itemId: 'y1', categoryL1: 'y' },
      { itemId: 'n1', categoryL1: null },
      ...['y2', 'y3', 'y4'].map((itemId) => ({ itemId, categoryL1: 'y' })),
      { itemId: 'z1', categoryL1: 'z' },
      { itemId: 'z2', categoryL1: 'z' },
    ];
    const out = diversify(ranked, (c) => c.categoryL1, 2, 5);
    assert.deepEqual(
      out.map((c) => c.itemId),
      // top 5: x1 x2 (x3..x5 deferred) y1 n1 y2; then deferred x3 x4 x5, then the rest in order.
      ['x1', 'x2', 'y1', 'n1', 'y2', 'x3', 'x4', 'x5', 'y3', 'y4', 'z1', 'z2'],
    );
    assert.equal(out.length, ranked.length);
  });

  it('fills the top from deferred items when there is not enough variety', () => {
    const ranked = ['a', 'b', 'c', 'd'].map((itemId) => ({ itemId, categoryL1: 'x' }));
    assert.deepEqual(
      diversify(ranked, (c) => c.categoryL1, 1, 3).map((c) => c.itemId),
      ['a', 'b', 'c', 'd'],
    );
  });

  it('holds the rule for every category in the top 10 of a long list', () => {
    const cats = ['a', 'a', 'a', 'a', 'a', 'b', 'b', 'b', 'b', 'c', 'c', 'c', 'c', 'd', 'e'];
    const ranked = cats.map((categoryL1, i) => ({ itemId: `i${i}`, categoryL1 }));
    const top = diversify(ranked, (c) => c.categoryL1, 3, 10).slice(0, 10);
    const counts = new Map<string, number>();
    for (const c of top) counts.set(c.categoryL1, (counts.get(c.categoryL1) ?? 0) + 1);
    assert.ok(
      [...counts.values()].every((n) => n <= 3),
      JSON.stringify([...counts]),
    );
    assert.equal(new Set(top.map((c) => c.itemId)).size, 10);
  });

  it('builds only the first `length` positions, the same as the whole list cut there', () => {
    const cats = ['a', 'a', 'a', 'b', 'a', 'c', 'b', 'b', 'a', 'c', 'c', 'd', 'a', null, 'b'];
    const ranked = cats.map((categoryL1, i) => ({ itemId: `i${i}`, categoryL1 }));
    const whole = diversify(ranked, (c) => c.categoryL1, 2, 6);
    assert.equal(whole.length, ranked.length);
    for (let length = 0; length <= ranked.length + 2; length++) {
      assert.deepEqual(
        diversify(ranked, (c) => c.categoryL1, 2, 6, length),
        whole.slice(0, length),
      );
    }
    // A typed array of positions, as the feed service passes it.
    const positions = Uint32Array.from(ranked, (_, i) => i);
    assert.deepEqual(
      diversify(positions, (i) => cats[i] ?? null, 2, 6, 8).map((i) => `i${i}`),
      whole.slice(0, 8).map((c) => c.itemId),
    );
  });
});

describe('impressions keys', () => {
  it('a user hash in the user slot, offset field skipped when parsed', () => {
    assert.equal(userImpressionsKey('u1'), '{u:u1}:imp');
    const m = parseImpressions({ a: '2', b: '1', [IMPRESSIONS_OFFSET_FIELD]: '3:17' });
    assert.deepEqual(
      [...m],
      [
        ['a', 2],
        ['b', 1],
      ],
    );
  });
});
