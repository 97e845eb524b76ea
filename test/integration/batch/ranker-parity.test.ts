/**
 * The reranker end to end, without the stream services: a synthetic learnable dataset built
 * through the shared feature module, written as training Parquet, trained by train.py (through
 * trainReranker, in the project's Python environment, which is created on first use: under
 * CI that is an install, never a skip), loaded in onnxruntime-node and compared with the
 * LightGBM booster's own predictions in Python.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { loadConfig } from '../../../core/config.js';
import { createLogger } from '../../../core/log.js';
import { ensurePythonEnv, runCommand } from '../../../batch/python-env.js';
import { predictWithBooster, trainReranker, type TrainResult } from '../../../batch/train.js';
import { writeTrainingData, type TrainingGroup } from '../../../batch/training-data.js';
import {
  FEATURE_COUNT,
  FEATURE_NAMES,
  fillFeatures,
  SOURCES,
  type RankCandidate,
  type RankContext,
} from '../../../serving/rank-features.js';
import {
  loadRanker,
  ModelFeaturesMismatchError,
  ModelInvalidError,
  type Ranker,
} from '../../../serving/ranker.js';
import type { SessionFeatures } from '../../../store/session-features.js';

const log = createLogger(process.env.RECSYS_LOG_LEVEL ?? 'warn');
// No service and no secret is used here: the development defaults are enough.
const config = loadConfig({ ...process.env, RECSYS_ENV: 'development' });
const QUERIES = 300;
const PER_QUERY = 20;
const TRAIN_QUERIES = 230; // the rest are held out for the ranking check
const NOW = 1_750_000_000_000;
const DAY = 86_400_000;
const CATEGORIES = ['shoes', 'hats', 'bags', 'books', 'games', 'tools'];

/** mulberry32: a seeded generator, so the dataset (and the trained model) is reproducible. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Query extends TrainingGroup {
  labels: number[];
}

/**
 * One user's query: random session and candidates; the label depends on the category affinity
 * share, whether the item is among the recent ones and the batch score, plus noise.
 */
function makeQuery(qid: number, rand: () => number): Query {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const known = rand() < 0.85;
  const cats = [...CATEGORIES].sort(() => rand() - 0.5).slice(0, 1 + Math.floor(rand() * 4));
  const itemIds = Array.from({ length: PER_QUERY }, (_, i) => `q${qid}-i${i}`);
  const session: SessionFeatures | null = known
    ? {
        total: 1 + Math.floor(rand() * 200),
        counts: { view: 10, click: 4, like: 1, add_to_cart: 2, purchase: Math.floor(rand() * 3) },
        session: {
          id: 's',
          start: NOW - 3_600_000,
          last: NOW - Math.floor(rand() * 3_600_000),
          length: 1 + Math.floor(rand() * 30),
        },
        affinities: cats.map((c, i): [string, number] => [c, 10 / (i + 1) + rand()]),
        recent: itemIds.filter(() => rand() < 0.2),
        purchased: itemIds.filter(() => rand() < 0.05),
        consumed: [],
      }
    : null;
  const candidates: RankCandidate[] = itemIds.map((itemId) => {
    const scores: RankCandidate['scores'] = {};
    for (const s of SOURCES) if (rand() < 0.5) scores[s] = rand() * (s === 'batch' ? 1 : 50);
    return {
      itemId,
      scores,
      item:
        rand() < 0.95
          ? {
              categoryL1: pick(CATEGORIES),
              price: rand() < 0.9 ? Math.round(rand() * 20000) / 100 : null,
              createdAt: NOW - rand() * 90 * DAY,
              popularity: Math.floor(rand() * 1000),
            }
          : null,
    };
  });
  const ctx: RankContext = { now: NOW, session, userPriceLevel: known ? 3 + rand() : null };
  const features = new Float32Array(PER_QUERY * FEATURE_COUNT);
  fillFeatures(features, ctx, candidates);
  const f = (row: number, name: string): number =>
    features[row * FEATURE_COUNT + FEATURE_NAMES.indexOf(name)] as number;
  const labels = candidates.map((_, i) => {
    const u =
      3 * f(i, 'cat_affinity_share') +
      2 * f(i, 'recent_rrank') +
      f(i, 'score_batch') +
      0.4 * (rand() - 0.5);
    return u > 2.2 ? 3 : u > 1.6 ? 2 : u > 1.1 ? 1 : 0;
  });
  return { qid, features, labels };
}

function ndcgAt10(scores: ArrayLike<number>, labels: readonly number[]): number {
  const gain = (l: number) => 2 ** l - 1;
  const dcg = (order: number[]) =>
    order.slice(0, 10).reduce((s, i, r) => s + gain(labels[i] as number) / Math.log2(r + 2), 0);
  const idx = labels.map((_, i) => i);
  const ideal = dcg([...idx].sort((a, b) => (labels[b] as number) - (labels[a] as number)));
  if (ideal === 0) return NaN;
  return dcg([...idx].sort((a, b) => (scores[b] as number) - (scores[a] as number))) / ideal;
}

const mean = (xs: number[]) => {
  const ok = xs.filter((x) => !Number.isNaN(x));
  return ok.reduce((a, b) => a + b, 0) / ok.length;
};

describe('reranker: training, ONNX export and serving parity', () => {
  let dir: string;
  let queries: Query[];
  let trained: TrainResult;
  let ranker: Ranker;
  let trainMs: number;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'recsys-ranker-'));
    const rand = rng(42);
    queries = Array.from({ length: QUERIES }, (_, q) => makeQuery(q, rand));
    await writeTrainingData(join(dir, 'train.parquet'), queries.slice(0, TRAIN_QUERIES));
    await writeTrainingData(join(dir, 'test.parquet'), queries.slice(TRAIN_QUERIES));
    await ensurePythonEnv(config.batch.pythonVenv, log); // an install here is not training time
    const t0 = performance.now();
    trained = await trainReranker(config, log, {
      trainParquet: join(dir, 'train.parquet'),
      outDir: join(dir, 'model'),
    });
    trainMs = performance.now() - t0;
    ranker = await loadRanker(trained.onnxPath);
  });

  after(async () => {
    await ranker?.release();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('trains with early stopping and carries the feature names in the model', (t) => {
    const s = trained.summary;
    t.diagnostic(
      `trainReranker ${Math.round(trainMs)} ms (train.py ${s.train_seconds} s to fit), ` +
        `best iteration ${s.best_iteration}, valid NDCG@10 ${s.valid_ndcg_at_10}`,
    );
    assert.equal(s.objective, 'lambdarank');
    assert.deepEqual(s.feature_names, FEATURE_NAMES);
    assert.ok(s.best_iteration >= 1);
    assert.ok((s.valid_ndcg_at_10 ?? 0) > 0.5, `valid NDCG@10 ${s.valid_ndcg_at_10}`);
    assert.deepEqual(ranker.featureNames, FEATURE_NAMES);
    assert.equal(ranker.metadata.objective, 'lambdarank');
    assert.equal(ranker.metadata.n_features, String(FEATURE_COUNT));
    assert.ok(!Number.isNaN(Date.parse(ranker.metadata.trained_at ?? '')));
  });

  it('scores the test Parquet in onnxruntime-node as the booster does in Python', async (t) => {
    const testFile = join(dir, 'test.parquet');
    const rows = await parquetReadObjects({
      file: await asyncBufferFromFile(testFile),
      compressors,
    });
    const held = queries.slice(TRAIN_QUERIES);
    assert.equal(rows.length, held.length * PER_QUERY);
    const x = new Float32Array(rows.length * FEATURE_COUNT);
    rows.forEach((r, i) => FEATURE_NAMES.forEach((n, j) => (x[i * FEATURE_COUNT + j] = r[n])));
    // The file holds exactly what the feature module computed.
    const direct = new Float32Array(rows.length * FEATURE_COUNT);
    held.forEach((q, k) => direct.set(q.features, k * PER_QUERY * FEATURE_COUNT));
    assert.deepEqual(x, direct);

    const onnx = await ranker.score(x, rows.length);
    const python = await predictWithBooster(config, log, {
      parquet: testFile,
      boosterPath: trained.boosterPath,
      outJson: join(dir, 'python-scores.json'),
    });
    assert.equal(onnx.length, python.length);
    let maxDiff = 0;
    for (let i = 0; i < onnx.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs((onnx[i] as number) - (python[i] as number)));
    }
    t.diagnostic(
      `parity over ${onnx.length} rows: max |onnx - lightgbm| = ${maxDiff.toExponential(2)}`,
    );
    assert.ok(maxDiff < 1e-4, `max abs difference ${maxDiff}`);
  });

  it('ranks held-out queries clearly better than random', async (t) => {
    const model: number[] = [];
    const random: number[] = [];
    const rand = rng(7);
    for (const q of queries.slice(TRAIN_QUERIES)) {
      const scores = await ranker.score(q.features, PER_QUERY);
      model.push(ndcgAt10(scores, q.labels));
      for (let k = 0; k < 5; k++) {
        random.push(
          ndcgAt10(
            q.labels.map(() => rand()),
            q.labels,
          ),
        );
      }
    }
    const m = mean(model);
    const r = mean(random);
    t.diagnostic(`held-out NDCG@10: model ${m.toFixed(3)}, random ${r.toFixed(3)}`);
    assert.ok(m > r + 0.2, `model ${m} vs random ${r}`);
  });

  it('scores 200 candidates with one run, timed', async (t) => {
    const n = 200;
    const cands: RankCandidate[] = Array.from({ length: n }, (_, i) => ({
      itemId: `b${i}`,
      scores: { batch: i / n, trending: i % 7 },
      item: {
        categoryL1: CATEGORIES[i % 6] as string,
        price: i,
        createdAt: NOW - i * DAY,
        popularity: i,
      },
    }));
    const x = new Float32Array(n * FEATURE_COUNT);
    const ctx: RankContext = { now: NOW, session: null, userPriceLevel: null };
    const rounds = 300;
    for (let i = 0; i < 20; i++) await ranker.score(x, n);
    let fillNs = 0n;
    let scoreNs = 0n;
    for (let i = 0; i < rounds; i++) {
      const t0 = process.hrtime.bigint();
      fillFeatures(x, ctx, cands);
      const t1 = process.hrtime.bigint();
      const s = await ranker.score(x, n);
      scoreNs += process.hrtime.bigint() - t1;
      fillNs += t1 - t0;
      assert.equal(s.length, n);
    }
    const fillUs = Number(fillNs / BigInt(rounds)) / 1000;
    const scoreUs = Number(scoreNs / BigInt(rounds)) / 1000;
    t.diagnostic(
      `200 candidates: fillFeatures ${fillUs.toFixed(0)} µs, score ${scoreUs.toFixed(0)} µs (mean of ${rounds})`,
    );
    // A generous bound: this is a smoke check on a shared 2-core machine, not a benchmark.
    assert.ok(scoreUs < 20_000, `score took ${scoreUs} µs`);
  });

  it('refuses a model whose feature names differ, naming the first difference', async () => {
    const py = await ensurePythonEnv(config.batch.pythonVenv, log);
    const renamed = join(dir, 'renamed.onnx');
    // Swap two names in the metadata, as a model trained by an older build would have them.
    const script = [
      'import json, sys, onnx',
      'm = onnx.load(sys.argv[1])',
      'p = {e.key: e for e in m.metadata_props}["feature_names"]',
      'names = json.loads(p.value)',
      'names[4], names[5] = names[5], names[4]',
      'p.value = json.dumps(names)',
      'onnx.save(m, sys.argv[2])',
    ].join('\n');
    await runCommand(py.bin('python'), ['-c', script, trained.onnxPath, renamed]);
    await assert.rejects(loadRanker(renamed), (err: unknown) => {
      assert.ok(err instanceof ModelFeaturesMismatchError);
      assert.equal(err.code, 'RECSYS_MODEL_FEATURES_MISMATCH');
      assert.equal(err.index, 4);
      assert.match(err.message, /position 4: model has "rrank_covis", expected "rrank_batch"/);
      return true;
    });
  });

  it('gives a clear error for a corrupt or truncated file', async () => {
    const bytes = await readFile(trained.onnxPath);
    const truncated = join(dir, 'truncated.onnx');
    await writeFile(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));
    await assert.rejects(loadRanker(truncated), (err: unknown) => {
      assert.ok(err instanceof ModelInvalidError);
      assert.equal(err.code, 'RECSYS_MODEL_INVALID');
      assert.match(err.message, /truncated\.onnx: not a valid ONNX model/);
      return true;
    });
    const garbage = new Uint8Array(4096).map((_, i) => (i * 131 + 7) & 0xff);
    await assert.rejects(loadRanker(garbage), ModelInvalidError);
    await assert.rejects(loadRanker(join(dir, 'missing.onnx')), /missing\.onnx: cannot read/);
  });
});
