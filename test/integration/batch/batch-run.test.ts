/**
 * `runBatch` end to end on generated data with planted structure (real DuckDB, the project's
 * Python environment, Redis database 8, a local registry in a temp dir): the reranked hybrid
 * beats co-visitation alone by at least 1.2x, the heuristic blend and popularity on NDCG@10 (on
 * the same held-out queries); the model is champion; candidates are live; a deliberately worse
 * model is registered but not promoted, and the reason names what it did not beat.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { loadConfig } from '../../../core/config.js';
import { runBatch } from '../../../batch/run.js';
import { openRegistry } from '../../../store/registry/index.js';
import { CandidateStore } from '../../../store/candidates.js';
import { config as baseConfig, log, requireServices } from '../harness.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('npm run batch (runBatch)', () => {
  it('trains a hybrid that beats co-visitation by 1.2x, and never promotes a worse model', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const dir = await mkdtemp(join(tmpdir(), 'batch-run-'));
    dirs.push(dir);
    const redisUrl = `${baseConfig.redis.url}/8`;
    const config = loadConfig({
      ...process.env,
      RECSYS_REDIS_URL: redisUrl,
      RECSYS_LAKE_DIR: join(dir, 'lake'),
      RECSYS_BATCH_DIR: join(dir, 'batch'),
      RECSYS_MODEL_REGISTRY_URL: `file://${join(dir, 'models')}`,
      MLFLOW_TRACKING_URI: '',
    });
    const redis = new Redis(redisUrl, { maxRetriesPerRequest: 2 });
    const lines: string[] = [];
    try {
      await redis.flushdb();
      const first = await runBatch(config, log, redis, { generateEvents: 300_000, seed: 3 }, (l) =>
        lines.push(l),
      );
      const m = first.metrics;
      t.diagnostic(
        `NDCG@10 on ${m.hybrid.users} held-out queries: hybrid ${m.hybrid.ndcg_at_10.toFixed(4)}, blend ${m.blend.ndcg_at_10.toFixed(4)}, co-visitation ${m.covisitation.ndcg_at_10.toFixed(4)}, popularity ${m.popularity.ndcg_at_10.toFixed(4)}; steps ${JSON.stringify(first.stepsMs)}`,
      );
      assert.ok(
        m.hybrid.ndcg_at_10 >= 1.2 * m.covisitation.ndcg_at_10,
        'hybrid >= 1.2x co-visitation',
      );
      assert.ok(m.hybrid.ndcg_at_10 > m.blend.ndcg_at_10, 'hybrid beats the heuristic blend');
      assert.ok(
        m.covisitation.ndcg_at_10 > m.popularity.ndcg_at_10,
        'co-visitation beats popularity',
      );
      assert.equal(first.model.promoted, true, first.model.reason);
      assert.equal(await new CandidateStore(redis).currentVersion(), first.candidatesVersion);
      assert.ok(existsSync(first.report));
      assert.match(await readFile(first.report, 'utf8'), /\| hybrid \|/);
      for (const step of [
        'generate',
        'etl',
        'candidates',
        'train+evaluate',
        'register',
        'publish',
      ]) {
        assert.ok(
          lines.some((l) => l.startsWith(`[${step}] `) && l.includes(' s)')),
          `progress line for ${step}`,
        );
      }

      // A crippled model (one stump) is registered but the champion stays.
      const second = await runBatch(
        config,
        log,
        redis,
        {
          params: { num_boost_round: 1, num_leaves: 2, max_depth: 1, early_stopping_rounds: 0 },
        },
        () => undefined,
      );
      t.diagnostic(`worse model: ${second.model.reason}`);
      assert.equal(second.model.promoted, false);
      assert.match(second.model.reason, /does not surely beat the (heuristic blend|co-visitation)/);
      const registry = openRegistry(config.batch, log);
      try {
        assert.equal((await registry.champion())?.version, first.model.version);
        assert.equal((await registry.versions()).length, 2);
      } finally {
        await registry.close();
      }
    } finally {
      await redis.flushdb();
      redis.disconnect();
    }
  });
});
