import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { createLogger } from '../../../core/log.js';
import {
  blendMeta,
  blendRows,
  blendScores,
  blendWeightsOf,
  dampers,
  DEFAULT_BLEND,
  scoreBlendRows,
} from '../../../serving/blend.js';
import { queryNdcg, tuneBlend } from '../../../batch/blend-weights.js';
import { startModelHolder } from '../../../serving/model.js';
import { FEATURE_COUNT, FEATURE_NAMES } from '../../../serving/rank-features.js';
import type { Ranker } from '../../../serving/ranker.js';
import type { ModelRegistry } from '../../../store/registry/index.js';
import { belowHeuristics, retireIfBelowBlend } from '../../../batch/run.js';
import { ndcgByUser, pairedAdvantage } from '../../../batch/evaluate.js';

const row = (values: Record<string, number>): number[] => {
  const r = new Array<number>(FEATURE_COUNT).fill(0);
  for (const [name, v] of Object.entries(values)) r[FEATURE_NAMES.indexOf(name)] = v;
  return r;
};

describe('heuristic blend', () => {
  it('orders by co-visitation, then batch score, then trending, popularity, item popularity', () => {
    const rows = [
      row({ rrank_popularity: 1, item_popularity_log: 9 }),
      row({ score_covis_sum: 0.6 }),
      row({ score_batch: 0.3 }),
      row({ rrank_trending: 1 }),
      row({ rrank_trending: 1, item_popularity_log: 2 }),
      row({ score_covis_sum: 1.5, score_batch: 0.1 }),
    ];
    const out = blendScores(rows.flat(), rows.length, new Float32Array(rows.length));
    const order = [...out.keys()].sort((a, b) => (out[b] as number) - (out[a] as number));
    assert.deepEqual(order, [5, 1, 2, 4, 3, 0]);
    assert.ok(Math.abs((out[5] as number) - 1.05) < 1e-6, 'best covis 1 + half of batch 0.1');
    assert.ok(Math.abs((out[1] as number) - 0.4) < 1e-6, 'covis relative to the best: 0.6 / 1.5');
  });

  it('scores co-visitation relative to the feed, whatever its scale', () => {
    const feed = (scale: number) => [
      row({ score_covis_sum: 0.03 * scale, score_batch: 0.2 }),
      row({ score_covis_sum: 0.01 * scale }),
      row({ score_batch: 0.9 }),
    ];
    const a = blendScores(feed(1).flat(), 3, new Float32Array(3));
    const b = blendScores(feed(50).flat(), 3, new Float32Array(3));
    assert.deepEqual([...a], [...b]);
    assert.ok(Math.abs((a[0] as number) - 1.1) < 1e-6);
    const none = blendScores([row({ score_batch: 0.4 })].flat(), 1, new Float32Array(1));
    assert.ok(Math.abs((none[0] as number) - 0.2) < 1e-6, 'no co-visitation: no division by 0');
  });

  it('damps co-visitation by popularity^0.2 and adds the EASE profile relative to the feed', () => {
    // 0.5 co-visits of an item seen 1,024 times (1024^0.2 = 4) score below 0.2 of one seen once.
    const rows = [
      row({ score_covis_sum: 0.5, item_popularity_log: Math.log1p(1024) }),
      row({ score_covis_sum: 0.2 }),
      row({ profile_ease: 4 }),
      row({ profile_ease: 2, score_covis_sum: 0.1 }),
    ];
    const weights = { ease: 0.35, covisDamping: 0.2 };
    const out = blendScores(rows.flat(), rows.length, new Float32Array(rows.length), weights);
    const expect = [0.125 / 0.2 + 0.001 * Math.log1p(1024), 1, 0.35, 0.5 + 0.175];
    expect.forEach((e, i) =>
      assert.ok(Math.abs((out[i] as number) - e) < 1e-5, `row ${i}: ${out[i]}`),
    );
    // Unweighted, EASE counts nothing and the popular item's co-visitation leads.
    const plain = blendScores(rows.flat(), rows.length, new Float32Array(rows.length));
    assert.ok((plain[0] as number) > 1 && (plain[2] as number) === 0, String([...plain]));
  });

  it("publishes its weights in a version's meta and reads them back, bad ones as the default", () => {
    const meta = blendMeta({ ease: 0.2, covisDamping: 0.1 });
    const asRedis = Object.fromEntries(Object.entries(meta).map(([k, v]) => [k, String(v)]));
    assert.deepEqual(blendWeightsOf(asRedis), { ease: 0.2, covisDamping: 0.1 });
    assert.deepEqual(blendWeightsOf({}), DEFAULT_BLEND);
    assert.deepEqual(blendWeightsOf({ blend_ease: 'x', blend_covis_damping: '-1' }), DEFAULT_BLEND);
  });

  it('scores the same from reduced rows with precomputed dampers as from the matrix', () => {
    // A fixed pseudo-random feed: some rows without co-visitation or EASE, skewed popularity.
    let seed = 7;
    const rnd = (): number => (seed = (seed * 16807) % 2147483647) / 2147483647;
    const n = 50;
    const matrix = new Float32Array(n * FEATURE_COUNT).map(() => (rnd() < 0.3 ? 0 : rnd()));
    for (let i = 0; i < n; i++) {
      matrix[i * FEATURE_COUNT + FEATURE_NAMES.indexOf('item_popularity_log')] = 10 * rnd();
    }
    const rows = blendRows(matrix, n);
    for (const covisDamping of [0, 0.2, 0.3]) {
      const divisors = dampers(rows, covisDamping, new Float64Array(n));
      for (const ease of [0, 0.35]) {
        const w = { ease, covisDamping };
        const direct = blendScores(matrix, n, new Float32Array(n), w);
        assert.deepEqual(scoreBlendRows(rows, new Float32Array(n), w, divisors), direct);
        assert.deepEqual(scoreBlendRows(rows, new Float32Array(n), w), direct);
      }
    }
  });

  it('refuses a buffer shorter than the rows', () => {
    assert.throws(() => blendScores([], 2, new Float32Array(1)), RangeError);
  });
});

describe('blend weights picked by the batch', () => {
  // Each query: an item co-visited most (row 0), one with the best EASE profile (row 1), and
  // a popular one (row 2) whose co-visitation is nearly the best.
  const query = (relevant: number, qid: number) => ({
    qid,
    features: new Float32Array(
      [
        row({ score_covis_sum: 1, item_popularity_log: Math.log1p(1) }),
        row({ score_covis_sum: 0.3, profile_ease: 5 }),
        row({ score_covis_sum: 0.95, item_popularity_log: Math.log1p(100_000) }),
      ].flat(),
    ),
    labels: [0, 1, 2].map((r) => (r === relevant ? 1 : 0)),
  });

  it('scores NDCG@10 with graded gains, ties to the earlier row', () => {
    assert.equal(queryNdcg(Float32Array.from([3, 2, 1]), [1, 0, 0], 3), 1);
    assert.ok(
      Math.abs(queryNdcg(Float32Array.from([1, 1, 1]), [0, 1, 0], 3) - 1 / Math.log2(3)) < 1e-12,
    );
    assert.ok(
      Math.abs(
        queryNdcg(Float32Array.from([2, 1]), [1, 2], 2) -
          (1 + 3 / Math.log2(3)) / (3 + 1 / Math.log2(3)),
      ) < 1e-12,
    );
  });

  it('keeps the plain blend when the most co-visited items are what users take', () => {
    const t = tuneBlend([query(0, 0), query(0, 1)]);
    assert.deepEqual(t.weights, DEFAULT_BLEND);
    assert.equal(t.ndcg, 1);
    assert.equal(t.queries, 2);
  });

  it("weighs EASE in when the profile's items are taken", () => {
    const t = tuneBlend([query(1, 0), query(1, 1), query(0, 2)]);
    assert.ok(t.weights.ease > 0, JSON.stringify(t));
    assert.ok(t.ndcg > t.plainNdcg);
    assert.equal(tuneBlend([]).queries, 0);
  });

  it('damps co-visitation by popularity when the popular items are not taken', () => {
    // A very popular item co-visited a little more than the one taken (label 1).
    const q = (qid: number) => ({
      qid,
      features: new Float32Array(
        [
          row({ score_covis_sum: 1, item_popularity_log: Math.log1p(100_000) }),
          row({ score_covis_sum: 0.9 }),
        ].flat(),
      ),
      labels: [0, 1],
    });
    const t = tuneBlend([q(0), q(1)]);
    assert.ok(t.weights.covisDamping > 0, JSON.stringify(t));
    assert.equal(t.ndcg, 1);
    assert.ok(Math.abs(t.plainNdcg - 1 / Math.log2(3)) < 1e-12);
  });
});

describe('promotion floor', () => {
  const adv = (diff: number, z: number) => ({ diff, z, users: 200 });
  it('passes a model surely above the blend and co-visitation', () => {
    assert.equal(belowHeuristics({ blend: adv(0.02, 2.1), covisitation: adv(0.03, 3) }), null);
  });
  it('keeps the blend when the model is not surely better, and says by how much', () => {
    const why = belowHeuristics({ blend: adv(0.004, 0.8), covisitation: adv(0.03, 3) });
    assert.match(
      why ?? '',
      /heuristic blend on 200 held-out queries \(mean difference 0\.0040, z 0\.80 < 1\.64\)/,
    );
    assert.match(
      belowHeuristics({ blend: adv(0.02, 2), covisitation: adv(-0.01, 2) }) ?? '',
      /co-visitation/,
    );
  });
});

describe('paired advantage', () => {
  it('is the mean per-user difference over its standard error', () => {
    const a = new Map([
      ['u1', 0.5],
      ['u2', 0.7],
      ['u3', 0.4],
      ['u4', 0.6],
    ]);
    const b = new Map([
      ['u1', 0.4],
      ['u2', 0.5],
      ['u3', 0.4],
      ['u4', 0.3],
    ]);
    // Differences 0.1, 0.2, 0, 0.3: mean 0.15, sample sd 0.1291, se 0.06455, z 2.324.
    const r = pairedAdvantage(a, b);
    assert.ok(Math.abs(r.diff - 0.15) < 1e-9);
    assert.ok(Math.abs(r.z - 2.3238) < 1e-3, String(r.z));
    assert.equal(r.users, 4);
    assert.deepEqual(pairedAdvantage(a, a), { diff: 0, z: 0, users: 4 });
  });
  it('scores each user as evaluate does', () => {
    const rel = new Map([
      ['u1', new Map([['x', 1]])],
      ['u2', new Map([['y', 1]])],
    ]);
    const by = ndcgByUser(
      new Map([
        ['u1', ['x']],
        ['u2', ['a', 'y']],
      ]),
      rel,
    );
    assert.equal(by.get('u1'), 1);
    assert.ok(Math.abs((by.get('u2') as number) - 1 / Math.log2(3)) < 1e-12);
  });
});

describe('champion retirement', () => {
  const adv = (diff: number, z: number) => ({ diff, z, users: 3000 });
  const registry = () => {
    const asked: string[] = [];
    return {
      asked,
      retireChampion: (v: string) => {
        asked.push(v);
        return Promise.resolve(true);
      },
    };
  };

  it('retires a champion the blend surely beats, and only that', async () => {
    const r = registry();
    const champ = (overBlend: ReturnType<typeof adv> | null) => ({
      version: '4',
      metrics: null,
      overBlend,
    });
    const why = await retireIfBelowBlend(r, champ(adv(-0.04, -9.5)));
    assert.match(
      why ?? '',
      /^champion 4 retired: the heuristic blend beats it on 3000 held-out queries \(mean difference 0\.0400, z 9\.50\)/,
    );
    assert.deepEqual(r.asked, ['4']);
    for (const c of [champ(adv(-0.01, -1.2)), champ(adv(0.02, 3)), champ(null), null]) {
      assert.equal(await retireIfBelowBlend(r, c), null);
    }
    assert.deepEqual(r.asked, ['4']);
  });
});

describe('model holder mode', () => {
  const log = createLogger('silent', 'test');
  let released = 0;
  const ranker: Ranker = {
    score: () => Promise.resolve(new Float32Array(0)),
    release: () => {
      released++;
      return Promise.resolve();
    },
  } as unknown as Ranker;
  const registryWith = (state: { champion: { version: string; onnxPath: string } | null }) =>
    ({
      champion: () => Promise.resolve(state.champion),
      close: () => Promise.resolve(),
    }) as unknown as ModelRegistry;

  it('is "blend" with an empty registry, "model" once a champion loads', async () => {
    const state: { champion: { version: string; onnxPath: string } | null } = { champion: null };
    const metrics = new Registry();
    const holder = startModelHolder({
      registry: registryWith(state),
      log,
      metrics,
      pollMs: 60_000,
      load: () => Promise.resolve(ranker),
    });
    try {
      await holder.started;
      assert.equal(holder.mode(), 'blend');
      assert.equal(holder.acquire(), null);
      const info = async () =>
        ((await metrics.getSingleMetric('recsys_model_info')?.get())?.values ?? []).map(
          (v) => `${v.labels.version}=${v.value}`,
        );
      assert.deepEqual(await info(), ['blend=1']);
      state.champion = { version: '3', onnxPath: '/m.onnx' };
      await holder.poll();
      assert.equal(holder.mode(), 'model');
      assert.deepEqual(await info(), ['3=1']);

      // The batch retires the champion: a request holding the model finishes with it, the
      // session is released after it, and the next request gets the blend.
      const lease = holder.acquire();
      assert.equal(lease?.version, '3');
      state.champion = null;
      await holder.poll();
      assert.equal(holder.mode(), 'blend');
      assert.equal(holder.acquire(), null);
      assert.deepEqual(await info(), ['blend=1']);
      assert.equal(released, 0);
      lease?.release();
      assert.equal(released, 1);
    } finally {
      await holder.close();
    }
  });

  it('is "blend" when the only champion cannot be loaded', async () => {
    const holder = startModelHolder({
      registry: registryWith({ champion: { version: '1', onnxPath: '/bad.onnx' } }),
      log,
      metrics: new Registry(),
      pollMs: 60_000,
      load: () => Promise.reject(new Error('corrupt')),
    });
    try {
      await holder.started;
      assert.equal(holder.mode(), 'blend');
    } finally {
      await holder.close();
    }
  });
});
