import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { createLogger } from '../../../core/log.js';
import { blendScores } from '../../../serving/blend.js';
import { startModelHolder } from '../../../serving/model.js';
import { FEATURE_COUNT, FEATURE_NAMES } from '../../../serving/rank-features.js';
import type { Ranker } from '../../../serving/ranker.js';
import type { ModelRegistry } from '../../../store/registry/index.js';
import { belowHeuristics } from '../../../batch/run.js';

const row = (values: Record<string, number>): number[] => {
  const r = new Array<number>(FEATURE_COUNT).fill(0);
  for (const [name, v] of Object.entries(values)) r[FEATURE_NAMES.indexOf(name)] = v;
  return r;
};

describe('heuristic blend', () => {
  it('orders by co-visitation, then batch score, then trending, popularity, item popularity', () => {
    const rows = [
      row({ rrank_popularity: 1, item_popularity_log: 9 }),
      row({ score_covis_sum: 0.2 }),
      row({ score_batch: 0.3 }),
      row({ rrank_trending: 1 }),
      row({ rrank_trending: 1, item_popularity_log: 2 }),
      row({ score_covis_sum: 1.5, score_batch: 0.1 }),
    ];
    const out = blendScores(rows.flat(), rows.length, new Float32Array(rows.length));
    const order = [...out.keys()].sort((a, b) => (out[b] as number) - (out[a] as number));
    assert.deepEqual(order, [5, 1, 2, 4, 3, 0]);
    assert.ok(Math.abs((out[5] as number) - 1.55) < 1e-6, 'covis 1.5 + half of batch 0.1');
  });

  it('refuses a buffer shorter than the rows', () => {
    assert.throws(() => blendScores([], 2, new Float32Array(1)), RangeError);
  });
});

describe('promotion floor', () => {
  const m = (ndcg: number) => ({ ndcg_at_10: ndcg, users: 200 });
  it('passes a model above the blend and co-visitation', () => {
    assert.equal(belowHeuristics({ blend: m(0.1), covisitation: m(0.12), hybrid: m(0.13) }), null);
  });
  it('names the heuristic the model did not beat, with both scores and the query count', () => {
    const why = belowHeuristics({ blend: m(0.14), covisitation: m(0.12), hybrid: m(0.13) });
    assert.match(why ?? '', /heuristic blend \(0\.1400\) on 200 held-out queries/);
    assert.match(
      belowHeuristics({ blend: m(0.1), covisitation: m(0.13), hybrid: m(0.13) }) ?? '',
      /co-visitation \(0\.1300\)/,
    );
    assert.match(
      belowHeuristics({ blend: m(0.1), covisitation: m(0.1), hybrid: m(Number.NaN) }) ?? '',
      /does not beat/,
    );
  });
});

describe('model holder mode', () => {
  const log = createLogger('silent', 'test');
  const ranker: Ranker = {
    score: () => Promise.resolve(new Float32Array(0)),
    release: () => Promise.resolve(),
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
