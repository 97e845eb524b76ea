import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  FEATURE_COUNT,
  FEATURE_NAMES,
  fillFeatures,
  userPriceLevel,
  type RankCandidate,
  type RankContext,
} from '../../../serving/rank-features.js';
import type { SessionFeatures } from '../../../store/session-features.js';

const NOW = 1_000_000_000_000;
const DAY = 86_400_000;

/** Feature `name` of row `row`. */
const at = (out: Float32Array, row: number, name: string): number => {
  const j = FEATURE_NAMES.indexOf(name);
  assert.ok(j >= 0, `unknown feature ${name}`);
  return out[row * FEATURE_COUNT + j] as number;
};

const session: SessionFeatures = {
  total: 10,
  counts: { view: 6, click: 2, like: 0, add_to_cart: 1, purchase: 1 },
  session: { id: 's1', start: NOW - 600_000, last: NOW - 60_000, length: 4 },
  affinities: [
    ['shoes', 3],
    ['hats', 1],
  ],
  recent: ['i2', 'i1'],
  purchased: ['i1'],
  consumed: [],
};

const candidates: RankCandidate[] = [
  {
    itemId: 'i1',
    scores: { batch: 0.5, trending: 10 },
    item: { categoryL1: 'shoes', price: 99, createdAt: NOW - 2 * DAY, popularity: 9 },
  },
  {
    itemId: 'i2',
    scores: { batch: 0.9, covis: 0.3 },
    item: { categoryL1: 'hats', price: null, createdAt: NOW, popularity: 0 },
    profile: [0.4, 1.5],
  },
  { itemId: 'i9', scores: { popularity: 100 }, item: null },
];

describe('rank features', () => {
  it('keeps FEATURE_NAMES stable (a change must retrain every model)', () => {
    assert.deepEqual(FEATURE_NAMES, [
      'score_batch',
      'score_covis_sum',
      'score_trending',
      'score_popularity',
      'rrank_batch',
      'rrank_covis',
      'rrank_trending',
      'rrank_popularity',
      'n_sources',
      'item_known',
      'item_popularity_log',
      'item_age_days_log',
      'price_log',
      'price_known',
      'price_vs_user',
      'cat_affinity_share',
      'cat_affinity_rrank',
      'recent_rrank',
      'purchased_rrank',
      'user_known',
      'user_events_log',
      'session_length_log',
      'since_last_activity_s_log',
      'user_share_view',
      'user_share_click',
      'user_share_like',
      'user_share_add_to_cart',
      'user_share_purchase',
      'profile_ease',
      'profile_covis',
    ]);
    assert.equal(FEATURE_COUNT, 30);
    assert.ok(Object.isFrozen(FEATURE_NAMES));
  });

  it('computes hand-checked values for a small case', () => {
    const ctx: RankContext = { now: NOW, session, userPriceLevel: Math.log(100) };
    const out = new Float32Array(3 * FEATURE_COUNT).fill(-7); // stale values must be overwritten
    fillFeatures(out, ctx, candidates);
    const expected: Record<string, number[]> = {
      score_batch: [0.5, 0.9, 0],
      score_covis_sum: [0, 0.3, 0],
      score_trending: [10, 0, 0],
      score_popularity: [0, 0, 100],
      rrank_batch: [0.5, 1, 0],
      rrank_covis: [0, 1, 0],
      rrank_trending: [1, 0, 0],
      rrank_popularity: [0, 0, 1],
      n_sources: [2, 2, 1],
      item_known: [1, 1, 0],
      item_popularity_log: [Math.log(10), 0, 0],
      item_age_days_log: [Math.round(Math.log(3) * 1000) / 1000, 0, 0], // to 1/1000
      price_log: [Math.log(100), 0, 0],
      price_known: [1, 0, 0],
      price_vs_user: [0, 0, 0],
      cat_affinity_share: [0.75, 0.25, 0],
      cat_affinity_rrank: [1, 0.5, 0],
      recent_rrank: [0.5, 1, 0],
      purchased_rrank: [1, 0, 0],
      user_known: [1, 1, 1],
      user_events_log: Array(3).fill(Math.log(11)),
      session_length_log: Array(3).fill(Math.log(5)),
      since_last_activity_s_log: Array(3).fill(Math.log(61)),
      user_share_view: Array(3).fill(0.6),
      user_share_click: Array(3).fill(0.2),
      user_share_like: Array(3).fill(0),
      user_share_add_to_cart: Array(3).fill(0.1),
      user_share_purchase: Array(3).fill(0.1),
      profile_ease: [0, 0.4, 0],
      profile_covis: [0, 1.5, 0],
    };
    // Every feature is checked: a new name without an expectation fails here.
    assert.deepEqual(Object.keys(expected).sort(), [...FEATURE_NAMES].sort());
    for (const [name, values] of Object.entries(expected)) {
      values.forEach((v, row) => {
        const got = at(out, row, name);
        assert.ok(Math.abs(got - v) < 1e-6, `${name} row ${row}: got ${got}, expected ${v}`);
      });
    }
  });

  it('relates the price to the user level on the log scale', () => {
    const out = new Float32Array(FEATURE_COUNT);
    const one = [candidates[0] as RankCandidate];
    fillFeatures(out, { now: NOW, session, userPriceLevel: Math.log1p(49) }, one);
    assert.ok(Math.abs(at(out, 0, 'price_vs_user') - Math.log(2)) < 1e-6);
  });

  it('gives finite values for a new user and unknown items', () => {
    const out = new Float32Array(4 * FEATURE_COUNT).fill(Number.NaN);
    fillFeatures(out, { now: NOW, session: null, userPriceLevel: null }, [
      ...candidates,
      { itemId: 'x', scores: {}, item: null },
    ]);
    assert.ok(out.every(Number.isFinite), 'no NaN or Infinity');
    assert.equal(at(out, 0, 'user_known'), 0);
    assert.equal(at(out, 0, 'cat_affinity_share'), 0);
    assert.equal(at(out, 1, 'recent_rrank'), 0);
    assert.equal(at(out, 2, 'item_known'), 0);
    assert.equal(at(out, 3, 'n_sources'), 0);
  });

  it('gives finite values for a user with no session or affinities and odd inputs', () => {
    const bare: SessionFeatures = {
      total: 0,
      counts: { view: 0, click: 0, like: 0, add_to_cart: 0, purchase: 0 },
      session: null,
      affinities: [],
      recent: [],
      purchased: [],
      consumed: [],
    };
    const odd: RankCandidate[] = [
      {
        itemId: 'a',
        scores: { batch: Number.NaN },
        item: { categoryL1: 'c', price: -1, createdAt: Number.NaN, popularity: Number.NaN },
      },
    ];
    const out = new Float32Array(FEATURE_COUNT);
    fillFeatures(out, { now: NOW, session: bare, userPriceLevel: null }, odd);
    assert.ok(out.every(Number.isFinite));
  });

  it('writes only the rows asked for, and refuses a short buffer', () => {
    const out = new Float32Array(5 * FEATURE_COUNT).fill(42);
    fillFeatures(out, { now: NOW, session, userPriceLevel: null }, candidates.slice(0, 2));
    assert.ok(out.subarray(2 * FEATURE_COUNT).every((v) => v === 42));
    assert.throws(
      () =>
        fillFeatures(new Float32Array(10), { now: NOW, session, userPriceLevel: null }, candidates),
      RangeError,
    );
  });

  it('averages the log price of the items with a known price', () => {
    assert.equal(userPriceLevel([]), null);
    assert.equal(userPriceLevel([null, { price: null }]), null);
    const level = userPriceLevel([{ price: 9 }, { price: 99 }, null]) as number;
    assert.ok(Math.abs(level - (Math.log(10) + Math.log(100)) / 2) < 1e-12);
  });
});
