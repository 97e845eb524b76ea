import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { keepRows, mixCandidates } from '../../../serving/mix.js';
import { ItemTable } from '../../../serving/item-table.js';
import {
  FEATURE_COUNT,
  fillFeatureRows,
  fillFeatures,
  popularityLog,
  type RankCandidate,
  type RankItem,
} from '../../../serving/rank-features.js';
import type { SessionFeatures } from '../../../store/session-features.js';

const NOW = 1_000_000_000_000;
const DAY = 86_400_000;

describe('item table', () => {
  it('interns ids to stable dense keys and keeps columns through growth', () => {
    const table = new ItemTable(3);
    const a = table.intern('a');
    table.setFacts(a, 5, { categoryL1: 'shoes', price: 49, isAvailable: true, createdAt: 7 });
    // Past the initial capacity (1024): every column grows, nothing already set is lost.
    const keys = Array.from({ length: 5000 }, (_, i) => table.intern(`i${i}`));
    assert.deepEqual(keys.slice(0, 3), [1, 2, 3]);
    assert.equal(table.intern('a'), a);
    assert.equal(table.find('i4999'), 5000);
    assert.equal(table.find('nope'), undefined);
    assert.equal(table.ids[5000], 'i4999');
    assert.equal(table.size, 5001);
    assert.equal(table.price[a], 49);
    assert.equal(table.known[a], 1);
    assert.equal(table.available[a], 1);
    assert.equal(table.readAt[a], 5);
    assert.equal(table.categories[table.category[a] as number], 'shoes');
    assert.ok(Number.isNaN(table.popularityLog[4999]), 'popularity not read yet is NaN');
    assert.equal(table.known[4999], 0);
  });

  it('records absent items and prices, and forgets facts on a catalog change', () => {
    const table = new ItemTable(null);
    const a = table.intern('a');
    const b = table.intern('b');
    table.setFacts(a, 10, { categoryL1: 'c', price: null, isAvailable: false, createdAt: 1 });
    table.setFacts(b, 10, null);
    assert.ok(Number.isNaN(table.price[a]));
    assert.equal(table.available[a], 0);
    assert.equal(table.known[b], 0);
    const before = table.forgets;
    table.forgetFacts(['a', 'unknown']);
    assert.equal(table.readAt[a], 0);
    assert.equal(table.readAt[b], 10);
    assert.equal(table.forgets, before + 1);
    // No ids: every entry (change messages were missed).
    table.forgetFacts();
    assert.equal(table.readAt[b], 0);
    assert.equal(table.forgets, before + 2);
  });

  it('computes a list’s keys once per list', () => {
    const table = new ItemTable(1);
    const list = { ids: ['x', 'y', 'x'], scores: [3, 2, 1] };
    const keys = table.keysOf(list);
    assert.deepEqual(Array.from(keys), [0, 1, 0]);
    assert.equal(table.keysOf(list), keys);
  });
});

describe('features from an item table (the serving path)', () => {
  const session: SessionFeatures = {
    total: 12,
    counts: { view: 8, click: 2, like: 0, add_to_cart: 1, purchase: 1 },
    session: { id: 's', start: NOW - 900_000, last: NOW - 30_000, length: 5 },
    affinities: [
      ['hats', 4],
      ['shoes', 2],
      ['bags', 1],
    ],
    recent: ['b', 'z', 'a'],
    purchased: ['z'],
    consumed: [],
  };
  const facts: Record<string, RankItem | null> = {
    a: { categoryL1: 'shoes', price: 99, createdAt: NOW - 3 * DAY, popularity: 12 },
    b: { categoryL1: 'hats', price: null, createdAt: NOW - DAY, popularity: 0 },
    c: { categoryL1: 'socks', price: 5, createdAt: NOW + DAY, popularity: 3 },
    z: { categoryL1: 'bags', price: 20, createdAt: NOW - 9 * DAY, popularity: 1 },
    u: null,
  };

  it('fills what fillFeatures fills for the same candidates, whatever the keys', () => {
    // A table shared with other requests: many items before these, in another order.
    const table = new ItemTable(9);
    for (let i = 0; i < 3000; i++) table.intern(`other${i}`);
    for (const id of ['z', 'u', 'c', 'b', 'a']) {
      const k = table.intern(id);
      const f = facts[id] ?? null;
      table.setFacts(k, NOW, f && { ...f, isAvailable: true });
      if (f) table.popularityLog[k] = popularityLog(f.popularity);
    }
    const rows = mixCandidates(
      {
        batch: { ids: ['a', 'u', 'c'], scores: [0.9, 0.4, 0.7] },
        recent: ['b'],
        neighbours: new Map([['b', { ids: ['a', 'z'], scores: [2, 1] }]]),
        trending: [{ ids: ['c', 'b'], scores: [30, 10] }],
        popular: { ids: ['z', 'a'], scores: [50, 40] },
      },
      10,
      table,
    );
    // An exclusion compacts the rows (keys move with them).
    keepRows(rows, (i) => rows.ids[i] !== 'c');
    const served = new Float32Array(rows.n * FEATURE_COUNT);
    const ctx = { now: NOW, session, userPriceLevel: Math.log1p(30) };
    fillFeatureRows(served, ctx, {
      n: rows.n,
      keys: rows.keys,
      proposed: rows.proposed,
      scores: rows.scores,
      items: table,
    });

    const candidates: RankCandidate[] = rows.ids.map((itemId, i) => {
      const scores: RankCandidate['scores'] = {};
      (['batch', 'covis', 'trending', 'popularity'] as const).forEach((s, j) => {
        if ((rows.proposed[i] as number) & (1 << j)) scores[s] = rows.scores[i * 4 + j] as number;
      });
      return { itemId, scores, item: facts[itemId] ?? null };
    });
    const trained = new Float32Array(rows.n * FEATURE_COUNT);
    fillFeatures(trained, ctx, candidates);
    assert.deepEqual(Array.from(served), Array.from(trained));
    assert.ok(
      served.some((v) => v !== 0),
      'features were written',
    );
  });
});

describe('per-source ranks from mixing (RankRows.sourcePos)', () => {
  it('gives the features a sort gives, with ties, NaN and exclusions', () => {
    let seed = 11;
    const rand = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    // Few distinct scores (many ties), some equal only at float32 precision, some NaN.
    const score = (): number => {
      const r = rand();
      if (r < 0.05) return Number.NaN;
      if (r < 0.3) return 1 + (rand() < 0.5 ? 1e-9 : 0);
      return Math.floor(rand() * 6) / 2;
    };
    const list = (n: number) => {
      const ids = Array.from({ length: n }, () => `i${Math.floor(rand() * 120)}`);
      return { ids, scores: ids.map(score) };
    };
    for (let round = 0; round < 200; round++) {
      const table = new ItemTable(1);
      const recent = ['r0', 'r1', 'r2'];
      const rows = mixCandidates(
        {
          batch: list(Math.floor(rand() * 80)),
          recent,
          neighbours: new Map(recent.map((r) => [r, list(Math.floor(rand() * 30))])),
          trending: [list(20), list(10)],
          popular: list(Math.floor(rand() * 40)),
        },
        10 + Math.floor(rand() * 150),
        table,
      );
      keepRows(rows, () => rand() > 0.2);
      const sorted = new Float32Array(rows.n * FEATURE_COUNT);
      const placed = new Float32Array(rows.n * FEATURE_COUNT);
      const base = { n: rows.n, keys: rows.keys, proposed: rows.proposed, scores: rows.scores };
      const ctx = { now: NOW, session: null, userPriceLevel: null };
      fillFeatureRows(sorted, ctx, { ...base, items: table });
      fillFeatureRows(placed, ctx, { ...base, items: table, sourcePos: rows.sourcePos });
      assert.deepEqual(Array.from(placed), Array.from(sorted), `round ${round}`);
    }
  });
});
