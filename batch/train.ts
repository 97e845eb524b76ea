/**
 * Reranker training: runs `batch/python/train.py` (LightGBM lambdarank, ONNX export) in the
 * project's Python environment on Parquet written by `writeTrainingData`.
 *
 * @example
 *   const { onnxPath, summary } = await trainReranker(config, log, {
 *     trainParquet: '.local/batch/train.parquet',
 *     outDir: '.local/batch/model',
 *   });
 *   const ranker = await loadRanker(onnxPath);
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Config, Logger } from '../core/index.js';
import { ensurePythonEnv, PythonStepError, repoRoot, runCommand } from './python-env.js';

/** What train.py writes to `<outDir>/summary.json`. */
export interface TrainSummary {
  objective: string;
  trained_at: string;
  best_iteration: number;
  /** NDCG@10 on the validation queries that have a relevant item, at the best iteration. */
  valid_ndcg_at_10: number | null;
  train_ndcg_at_10: number | null;
  n_features: number;
  feature_names: string[];
  train_rows: number;
  train_queries: number;
  valid_rows: number;
  valid_queries: number;
  /** Largest |ONNX Runtime (Python) - LightGBM| over the validation rows, checked at export. */
  onnx_parity_max_abs_diff: number;
  train_seconds: number;
  params: Record<string, unknown>;
  onnx_path: string;
  booster_path: string;
}

export interface TrainOptions {
  trainParquet: string;
  /** Validation queries; without it train.py holds out a seeded 20% of the training queries. */
  validParquet?: string;
  /** Receives model.onnx, model.txt (the LightGBM booster) and summary.json. */
  outDir: string;
  /**
   * Merged over train.py's LightGBM defaults; also `num_boost_round`, `early_stopping_rounds`
   * and `valid_share`.
   */
  params?: Record<string, unknown>;
  /** Kills the Python step after this long, ms. @default 1_800_000 */
  timeoutMs?: number;
  /** Kills the Python step when it aborts (a shutdown abandoning the run). */
  signal?: AbortSignal;
}

export interface TrainResult {
  onnxPath: string;
  /** The LightGBM text model (for predictions with the booster itself). */
  boosterPath: string;
  summaryPath: string;
  summary: TrainSummary;
}

const SCRIPT = (): string => join(repoRoot(), 'batch', 'python', 'train.py');

export async function trainReranker(
  config: Readonly<Pick<Config, 'batch'>>,
  log: Logger,
  options: TrainOptions,
): Promise<TrainResult> {
  const py = await ensurePythonEnv(config.batch.pythonVenv, log);
  const outDir = resolve(options.outDir);
  await mkdir(outDir, { recursive: true });
  const args = [SCRIPT(), '--train', resolve(options.trainParquet), '--out-dir', outDir];
  if (options.validParquet) args.push('--valid', resolve(options.validParquet));
  if (options.params) args.push('--params', JSON.stringify(options.params));
  const t0 = Date.now();
  await runCommand(py.bin('python'), args, {
    log,
    timeoutMs: options.timeoutMs ?? 30 * 60_000,
    signal: options.signal,
    env: { ...process.env, PYTHONUNBUFFERED: '1' },
  });
  const summaryPath = join(outDir, 'summary.json');
  let summary: TrainSummary;
  try {
    summary = JSON.parse(await readFile(summaryPath, 'utf8')) as TrainSummary;
  } catch (err) {
    throw new PythonStepError(`train.py wrote no readable ${summaryPath}`, { cause: err });
  }
  log.info(
    {
      bestIteration: summary.best_iteration,
      validNdcg10: summary.valid_ndcg_at_10,
      seconds: (Date.now() - t0) / 1000,
    },
    'reranker trained',
  );
  return {
    onnxPath: join(outDir, 'model.onnx'),
    boosterPath: join(outDir, 'model.txt'),
    summaryPath,
    summary,
  };
}

/**
 * Scores a Parquet file (training layout) with the LightGBM booster itself, in Python: the
 * reference the ONNX model is checked against. Returns one score per row, in file order.
 */
export async function predictWithBooster(
  config: Readonly<Pick<Config, 'batch'>>,
  log: Logger,
  options: { parquet: string; boosterPath: string; outJson: string },
): Promise<number[]> {
  const py = await ensurePythonEnv(config.batch.pythonVenv, log);
  await runCommand(
    py.bin('python'),
    [
      SCRIPT(),
      '--predict',
      resolve(options.parquet),
      '--model',
      resolve(options.boosterPath),
      '--out',
      resolve(options.outJson),
    ],
    { log, timeoutMs: 10 * 60_000 },
  );
  return JSON.parse(await readFile(options.outJson, 'utf8')) as number[];
}
