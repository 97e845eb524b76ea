/**
 * Feature logging: a sampled share of served records (`RECSYS_FEED_LOG_FEATURES_SHARE`) carries
 * every candidate the feed was ranked from, with the feature rows exactly as this request
 * computed them. The batch (`batch/logged-feeds.ts`) labels these rows with what the user did
 * next and trains the reranker on them, so training and serving cannot differ in how the
 * candidates were mixed or the features computed (the rows a batch rebuilds from the lake only
 * approximate the server's state at request time).
 *
 * @example
 *   if (sampled(config.serving.logFeaturesShare)) record.candidates = logCandidates(m, n, ids);
 *   loggedMatrix(record.candidates); // the rows again, in the batch
 */
import { endianness } from 'node:os';
import type { LoggedCandidates } from '../../schemas/index.js';
import { FEATURE_COUNT, FEATURE_NAMES } from '../rank-features.js';

// The bytes are the Float32Array's own: the schema says little-endian, so refuse to run
// anywhere else rather than log rows no reader can trust.
if (endianness() !== 'LE') throw new Error('feature logging needs a little-endian machine');

const NAMES = [...FEATURE_NAMES];

/** Whether this feed is one of the logged share. */
export function sampled(share: number): boolean {
  return share >= 1 || (share > 0 && Math.random() < share);
}

/**
 * A copy of the `n` feature rows of `matrix` and their items: candidate i (`ids[i]`) is matrix
 * row `at[i]` (the model's grouped row order), or row i without `at`.
 */
export function logCandidates(
  matrix: Float32Array,
  n: number,
  ids: readonly string[],
  at?: ArrayLike<number>,
): LoggedCandidates {
  const itemIds = new Array<string>(n);
  for (let i = 0; i < n; i++) itemIds[at ? (at[i] as number) : i] = ids[i] as string;
  const bytes = n * FEATURE_COUNT * 4;
  const features = Buffer.allocUnsafe(bytes);
  features.set(new Uint8Array(matrix.buffer, matrix.byteOffset, bytes));
  return { featureNames: NAMES, itemIds, features };
}

/** The rows of a logged feed as a Float32Array (a copy, aligned), or null when malformed. */
export function loggedMatrix(c: LoggedCandidates): Float32Array | null {
  const width = c.featureNames.length;
  if (width === 0 || c.features.length !== c.itemIds.length * width * 4) return null;
  const out = new Float32Array(c.itemIds.length * width);
  new Uint8Array(out.buffer).set(c.features);
  return out;
}
