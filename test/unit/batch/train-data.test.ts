import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { relevance, writeTrainingData } from '../../../batch/training-data.js';
import { FEATURE_COUNT, FEATURE_NAMES } from '../../../serving/rank-features.js';

describe('training data', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'recsys-train-data-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('grades a candidate by the best future interaction with it', () => {
    assert.equal(relevance([]), 0);
    assert.equal(relevance(['view', 'view']), 1);
    assert.equal(relevance(['click', 'add_to_cart']), 2);
    assert.equal(relevance(['view', 'purchase', 'like']), 3);
  });

  it('writes qid, label and one float column per feature, rows in order', async () => {
    const path = join(dir, 'sub', 'train.parquet');
    const groups = [3, 1].map((qid) => {
      const features = new Float32Array(2 * FEATURE_COUNT).map((_, i) => qid * 1000 + i + 0.25);
      return { qid, features, labels: [qid === 3 ? 2 : 0, 1] };
    });
    assert.equal(await writeTrainingData(path, groups), 4);
    const file = await asyncBufferFromFile(path);
    const meta = await parquetMetadataAsync(file);
    const columns = meta.schema.slice(1);
    assert.deepEqual(
      columns.map((c) => c.name),
      ['qid', 'label', ...FEATURE_NAMES],
    );
    assert.ok(columns.slice(2).every((c) => c.type === 'FLOAT'));
    const rows = await parquetReadObjects({ file, compressors });
    assert.deepEqual(
      rows.map((r) => [r.qid, r.label]),
      [
        [3, 2],
        [3, 1],
        [1, 0],
        [1, 1],
      ],
    );
    const last = rows[3] as Record<string, number>;
    assert.equal(last[FEATURE_NAMES[0] as string], 1000 + FEATURE_COUNT + 0.25);
    assert.deepEqual(await readdir(join(dir, 'sub')), ['train.parquet']); // no temp file left
  });

  it('refuses features that do not match the labels, and labels LightGBM cannot take', async () => {
    const path = join(dir, 'bad.parquet');
    const features = new Float32Array(FEATURE_COUNT);
    await assert.rejects(
      writeTrainingData(path, [{ qid: 1, features, labels: [0, 1] }]),
      /qid 1: 30 feature values for 2 labels/,
    );
    await assert.rejects(
      writeTrainingData(path, [{ qid: 1, features, labels: [0.5] }]),
      /label 0.5 not an integer/,
    );
    assert.deepEqual(
      (await readdir(dir)).filter((f) => f.startsWith('bad')),
      [],
    );
  });
});
