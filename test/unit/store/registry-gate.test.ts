/**
 * The registry's pure parts: the champion gate both backends share, URL → backend choice,
 * `file://` paths, and MLflow artifact URIs → artifact-proxy paths.
 */
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { describe, test } from 'node:test';
import {
  decidePromotion,
  LocalModelRegistry,
  MlflowModelRegistry,
  openRegistry,
} from '../../../store/registry/index.js';
import { localRootFromUrl } from '../../../store/registry/local.js';
import { artifactPath } from '../../../store/registry/mlflow.js';
import { createLogger } from '../../../core/index.js';

const log = createLogger('silent');
const opts = { minNdcg: 0.05 };

describe('registry: champion gate', () => {
  test('first model above the minimum is promoted', () => {
    const r = decidePromotion({ version: '1', metrics: { ndcg_at_10: 0.1 } }, null, opts);
    assert.deepEqual(r.promoted, true);
    assert.equal(r.previous, undefined);
  });
  test('below the minimum never, with or without a champion', () => {
    const low = { version: '2', metrics: { ndcg_at_10: 0.049 } };
    assert.equal(decidePromotion(low, null, opts).promoted, false);
    const r = decidePromotion(low, { version: '1', metrics: { ndcg_at_10: 0.01 } }, opts);
    assert.equal(r.promoted, false);
    assert.equal(r.previous, '1');
    assert.match(r.reason, /ndcg_at_10 0\.049 of version 2 is below the minimum 0\.05/);
  });
  test('exactly the minimum passes; strictly better beats; a tie or worse does not', () => {
    const champ = { version: '1', metrics: { ndcg_at_10: 0.2 } };
    assert.equal(
      decidePromotion({ version: '2', metrics: { ndcg_at_10: 0.05 } }, null, opts).promoted,
      true,
    );
    assert.equal(
      decidePromotion({ version: '2', metrics: { ndcg_at_10: 0.21 } }, champ, opts).promoted,
      true,
    );
    assert.equal(
      decidePromotion({ version: '2', metrics: { ndcg_at_10: 0.2 } }, champ, opts).promoted,
      false,
    );
    const worse = decidePromotion({ version: '2', metrics: { ndcg_at_10: 0.1 } }, champ, opts);
    assert.equal(worse.promoted, false);
    assert.match(
      worse.reason,
      /ndcg_at_10 0\.1 of version 2 does not beat champion 1 \(0\.2, stored\)/,
    );
  });
  test('the champion re-scored on the same held-out data is what the candidate must beat', () => {
    // Drift: the champion scored 0.4 on its own, older held-out set; on today's it scores 0.1.
    const champ = { version: '1', metrics: { ndcg_at_10: 0.4 } };
    const candidate = { version: '2', metrics: { ndcg_at_10: 0.15 } };
    assert.equal(decidePromotion(candidate, champ, opts).promoted, false, 'stored: rejected');
    const rescored = { version: '1', metrics: { ndcg_at_10: 0.1 } };
    const r = decidePromotion(candidate, champ, { ...opts, rescored });
    assert.equal(r.promoted, true);
    assert.match(
      r.reason,
      /0\.15 of version 2 beats champion 1 \(0\.1, on the same held-out data\)/,
    );
    // Re-scored higher than the candidate: kept.
    const better = { version: '1', metrics: { ndcg_at_10: 0.2 } };
    assert.equal(decidePromotion(candidate, champ, { ...opts, rescored: better }).promoted, false);
    // The champion changed since the re-score: the stored score of the new one counts.
    const stale = { version: '0', metrics: { ndcg_at_10: 0.01 } };
    assert.equal(decidePromotion(candidate, champ, { ...opts, rescored: stale }).promoted, false);
    // The champion could not be scored on this data (another feature set): the candidate wins.
    const none = decidePromotion(candidate, champ, {
      ...opts,
      rescored: { version: '1', metrics: {} },
    });
    assert.equal(none.promoted, true);
    assert.match(none.reason, /champion 1 has no ndcg_at_10 \(on the same held-out data\)/);
  });
  test('missing or non-finite metric on the candidate is not promoted', () => {
    assert.equal(decidePromotion({ version: '2', metrics: {} }, null, opts).promoted, false);
    assert.equal(
      decidePromotion({ version: '2', metrics: { ndcg_at_10: Number.NaN } }, null, opts).promoted,
      false,
    );
  });
  test('a champion without the metric loses to a candidate that has it', () => {
    const r = decidePromotion(
      { version: '2', metrics: { ndcg_at_10: 0.1 } },
      { version: '1', metrics: {} },
      opts,
    );
    assert.equal(r.promoted, true);
    assert.equal(r.previous, '1');
  });
  test('the current champion is not re-promoted; a custom metric is honoured', () => {
    const champ = { version: '1', metrics: { ndcg_at_10: 0.2, mrr_at_20: 0.3 } };
    assert.equal(
      decidePromotion({ version: '1', metrics: { ndcg_at_10: 0.9 } }, champ, opts).promoted,
      false,
    );
    const r = decidePromotion(
      { version: '2', metrics: { ndcg_at_10: 0.1, mrr_at_20: 0.4 } },
      champ,
      { minNdcg: 0.05, metric: 'mrr_at_20' },
    );
    assert.equal(r.promoted, true);
    assert.match(r.reason, /mrr_at_20/);
  });
});

describe('registry: backend by URL', () => {
  const base = { modelName: 'm', dir: '/tmp/batch' };
  test('file:// is local, http(s):// is MLflow, anything else is refused', () => {
    assert.ok(
      openRegistry({ ...base, registryUrl: 'file://.local/models' }, log) instanceof
        LocalModelRegistry,
    );
    assert.ok(
      openRegistry({ ...base, registryUrl: 'http://127.0.0.1:5000' }, log) instanceof
        MlflowModelRegistry,
    );
    assert.ok(
      openRegistry({ ...base, registryUrl: 'https://mlflow.example.com' }, log) instanceof
        MlflowModelRegistry,
    );
    assert.throws(() => openRegistry({ ...base, registryUrl: 's3://bucket/models' }, log), {
      code: 'RECSYS_REGISTRY_UNSUPPORTED_URL',
    });
  });
  test('file:// paths: relative to the working directory, or absolute', () => {
    assert.equal(localRootFromUrl('file://.local/models'), resolve('.local/models'));
    assert.equal(localRootFromUrl('file:///var/lib/recsys/models'), '/var/lib/recsys/models');
    assert.equal(localRootFromUrl('file:///tmp/with%20space'), '/tmp/with space');
  });
  test('a model name that could escape the directory is refused', () => {
    assert.throws(
      () => openRegistry({ ...base, modelName: '../x', registryUrl: 'file:///tmp/r' }, log),
      {
        code: 'RECSYS_REGISTRY_BAD_INPUT',
      },
    );
  });
  test('MLflow artifact URIs map to the artifact proxy path', () => {
    assert.equal(artifactPath('mlflow-artifacts:/1/abc/artifacts'), '1/abc/artifacts');
    assert.equal(artifactPath('mlflow-artifacts:/1/abc/artifacts/model'), '1/abc/artifacts/model');
    assert.equal(artifactPath('mlflow-artifacts://h:5000/1/abc/artifacts/'), '1/abc/artifacts');
    assert.throws(() => artifactPath('/tmp/mlruns/1/abc/artifacts'), {
      code: 'RECSYS_REGISTRY_ARTIFACTS_NOT_PROXIED',
    });
    assert.throws(() => artifactPath('s3://bucket/1/abc'), {
      code: 'RECSYS_REGISTRY_ARTIFACTS_NOT_PROXIED',
    });
  });
});
