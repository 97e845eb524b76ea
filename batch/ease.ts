/**
 * EASE item weights (`batch/python/ease.py`, in the project's Python environment): per item its
 * strongest positive weights towards other items, fitted in closed form over the train
 * interactions of the `config.batch.easeItems` most interacted items. Published beside the
 * co-visitation neighbours (`BATCH.ease`); serving sums them over the user's recent items into
 * the `profile_ease` rank feature (`serving/profile.ts`).
 *
 * Memory and time grow with the square and the cube of `easeItems` (5,000 items: a 200 MB
 * matrix, seconds on two cores); 0 fits nothing and writes an empty file.
 *
 * @example
 *   const ease = await buildEase(config, log, etl, join(cands.dir, 'ease.parquet'));
 */
import { join, resolve } from 'node:path';
import type { Config, Logger } from '../core/index.js';
import type { EtlResult } from './etl.js';
import { ensurePythonEnv, PythonStepError, repoRoot, runCommand } from './python-env.js';

export interface EaseResult {
  /** itemId, neighbourId, score (an EASE weight, > 0), rank (1 = best). */
  path: string;
  /** Items fitted over, and (item, neighbour) weights written. */
  items: number;
  pairs: number;
}

export async function buildEase(
  config: Readonly<Pick<Config, 'batch'>>,
  log: Logger,
  etl: Pick<EtlResult, 'paths'>,
  outPath: string,
  signal?: AbortSignal,
): Promise<EaseResult> {
  const py = await ensurePythonEnv(config.batch.pythonVenv, log);
  const { stdout } = await runCommand(
    py.bin('python'),
    [
      join(repoRoot(), 'batch', 'python', 'ease.py'),
      '--interactions',
      resolve(etl.paths.trainInteractions),
      '--out',
      resolve(outPath),
      '--items',
      String(config.batch.easeItems),
      '--k',
      String(config.batch.neighboursPerItem),
      '--lam',
      String(config.batch.easeLambda),
    ],
    {
      log,
      timeoutMs: 30 * 60_000,
      signal,
      env: { ...process.env, PYTHONUNBUFFERED: '1' },
    },
  );
  const last = stdout.trim().split('\n').at(-1) ?? '';
  let summary: { items: number; pairs: number; seconds: number };
  try {
    summary = JSON.parse(last) as typeof summary;
  } catch (err) {
    throw new PythonStepError(`ease.py printed no summary: ${last.slice(0, 200)}`, { cause: err });
  }
  log.info(summary, 'EASE weights fitted');
  return { path: outPath, items: summary.items, pairs: summary.pairs };
}
