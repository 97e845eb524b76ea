/**
 * The behaviour every model-registry backend must show, run once per backend
 * (`registry-local.test.ts`, `registry-mlflow.test.ts`): registration, the champion gate
 * (first model, better, worse, below the minimum, against the champion re-scored on the same
 * data), exact bytes back from `champion()`,
 * listing, rollback with `setChampion`, `retireChampion`, and the error codes callers switch on.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { RegistryError, type ModelRegistry } from '../../../store/registry/index.js';
import { uniq } from '../harness.js';

export interface SuiteOptions {
  /** Opens the backend on a fresh model name; null when the backend is unavailable (skipped). */
  open(t: TestContext, modelName: string): Promise<ModelRegistry | null>;
  /** Extra checks after the champion flow, e.g. from outside with curl. */
  afterFlow?(
    t: TestContext,
    modelName: string,
    versions: { v1: string; v2: string; v3: string },
  ): Promise<void>;
}

const MIN = 0.05;

/** A model file of random bytes (the registry stores bytes; it does not parse ONNX). */
export async function modelFile(dir: string, name: string, size = 64 * 1024): Promise<Buffer> {
  const bytes = randomBytes(size);
  await writeFile(join(dir, name), bytes);
  return bytes;
}

export function registrySuite(backend: string, options: SuiteOptions): void {
  describe(`model registry (${backend})`, () => {
    test('champion gate: first, better, worse; exact bytes; listing; rollback', async (t) => {
      const name = uniq('reranker');
      const registry = await options.open(t, name);
      if (!registry) return;
      const dir = await mkdtemp(join(tmpdir(), 'recsys-reg-'));
      try {
        assert.equal(await registry.champion(), null, 'no champion before any registration');
        assert.deepEqual(await registry.versions(), []);

        const b1 = await modelFile(dir, 'm1.onnx');
        let t0 = performance.now();
        const { version: v1 } = await registry.register({
          onnxPath: join(dir, 'm1.onnx'),
          metrics: { ndcg_at_10: 0.2, recall_at_20: 0.3 },
          params: { num_leaves: 31, learning_rate: 0.05, objective: 'lambdarank' },
          tags: { git: 'abc123' },
        });
        t.diagnostic(`${backend}: register (64 KiB) took ${Math.round(performance.now() - t0)} ms`);
        assert.equal(await registry.champion(), null, 'register alone never sets the champion');

        const g1 = await registry.promoteIfBetter(v1, { ndcg_at_10: 0.2 }, { minNdcg: MIN });
        assert.equal(g1.promoted, true, g1.reason);
        assert.equal(g1.previous, undefined);
        assert.match(g1.reason, /no champion/);

        const b2 = await modelFile(dir, 'm2.onnx');
        const { version: v2 } = await registry.register({
          onnxPath: join(dir, 'm2.onnx'),
          metrics: { ndcg_at_10: 0.3 },
          params: { num_leaves: 63 },
        });
        assert.ok(Number(v2) > Number(v1), `versions increase: ${v1} then ${v2}`);
        const g2 = await registry.promoteIfBetter(v2, { ndcg_at_10: 0.3 }, { minNdcg: MIN });
        assert.deepEqual(
          { promoted: g2.promoted, previous: g2.previous },
          { promoted: true, previous: v1 },
        );

        await modelFile(dir, 'm3.onnx');
        const { version: v3 } = await registry.register({
          onnxPath: join(dir, 'm3.onnx'),
          metrics: { ndcg_at_10: 0.25 },
          params: { num_leaves: 15 },
        });
        const g3 = await registry.promoteIfBetter(v3, { ndcg_at_10: 0.25 }, { minNdcg: MIN });
        assert.equal(g3.promoted, false);
        assert.equal(g3.previous, v2);
        assert.match(g3.reason, /ndcg_at_10 0\.25 .*does not beat champion/);

        // A tie keeps the incumbent.
        const tie = await registry.promoteIfBetter(v3, { ndcg_at_10: 0.3 }, { minNdcg: MIN });
        assert.equal(tie.promoted, false, tie.reason);

        t0 = performance.now();
        const champ = await registry.champion();
        t.diagnostic(`${backend}: champion() took ${Math.round(performance.now() - t0)} ms`);
        assert.ok(champ);
        assert.equal(champ.version, v2, 'the worse v3 did not replace v2');
        assert.equal(champ.metrics.ndcg_at_10, 0.3);
        assert.ok((await readFile(champ.onnxPath)).equals(b2), 'champion bytes are v2 bytes');
        // A second call serves the same file (cached when remote).
        assert.ok((await readFile((await registry.champion())!.onnxPath)).equals(b2));

        const listed = await registry.versions();
        assert.deepEqual(
          listed.map((v) => v.version),
          [v1, v2, v3],
        );
        assert.deepEqual(listed[0]?.metrics, { ndcg_at_10: 0.2, recall_at_20: 0.3 });
        assert.deepEqual(listed[0]?.params, {
          num_leaves: '31',
          learning_rate: '0.05',
          objective: 'lambdarank',
        });
        assert.equal(listed[0]?.tags.git, 'abc123');
        assert.ok((listed[0]?.createdMs ?? 0) > Date.now() - 600_000);
        assert.deepEqual(
          listed.map((v) => v.aliases),
          [[], ['champion'], []],
        );

        await options.afterFlow?.(t, name, { v1, v2, v3 });

        // Rollback is unconditional.
        await registry.setChampion(v1);
        const rolled = await registry.champion();
        assert.equal(rolled?.version, v1);
        assert.ok((await readFile(rolled.onnxPath)).equals(b1));
        await assert.rejects(registry.setChampion('999'), {
          code: 'RECSYS_REGISTRY_VERSION_NOT_FOUND',
        });

        // Retiring leaves no champion, only when it still is the one named.
        assert.equal(await registry.retireChampion(v2), false);
        assert.equal((await registry.champion())?.version, v1);
        assert.equal(await registry.retireChampion(v1), true);
        assert.equal(await registry.champion(), null);
        assert.equal(await registry.retireChampion(v1), false);
        assert.ok((await registry.versions()).every((v) => !v.aliases.includes('champion')));
        await registry.setChampion(v1);
        await assert.rejects(
          registry.promoteIfBetter('999', { ndcg_at_10: 0.9 }, { minNdcg: MIN }),
          { code: 'RECSYS_REGISTRY_VERSION_NOT_FOUND' },
        );
      } finally {
        await registry.close();
        await rm(dir, { recursive: true, force: true });
      }
    });

    test('the gate compares with the champion re-scored on the same data; both scores kept', async (t) => {
      const name = uniq('reranker-drift');
      const registry = await options.open(t, name);
      if (!registry) return;
      const dir = await mkdtemp(join(tmpdir(), 'recsys-reg-'));
      try {
        await modelFile(dir, 'm1.onnx');
        const { version: v1 } = await registry.register({
          onnxPath: join(dir, 'm1.onnx'),
          metrics: { ndcg_at_10: 0.4 },
          params: {},
        });
        assert.equal(
          (await registry.promoteIfBetter(v1, { ndcg_at_10: 0.4 }, { minNdcg: MIN })).promoted,
          true,
        );
        // The data drifted: on today's held-out users the champion scores 0.1, the candidate 0.15.
        await modelFile(dir, 'm2.onnx');
        const { version: v2 } = await registry.register({
          onnxPath: join(dir, 'm2.onnx'),
          metrics: { ndcg_at_10: 0.15, champion_ndcg_at_10: 0.1 },
          params: {},
          tags: { champion_version: v1 },
        });
        const stored = await registry.promoteIfBetter(v2, { ndcg_at_10: 0.15 }, { minNdcg: MIN });
        assert.equal(stored.promoted, false, 'against the stored 0.4 it loses');
        const gate = await registry.promoteIfBetter(
          v2,
          { ndcg_at_10: 0.15 },
          { minNdcg: MIN, rescored: { version: v1, metrics: { ndcg_at_10: 0.1 } } },
        );
        assert.equal(gate.promoted, true, gate.reason);
        assert.match(gate.reason, /beats champion .*0\.1, on the same held-out data/);
        assert.equal((await registry.champion())?.version, v2);
        const listed = (await registry.versions()).find((v) => v.version === v2);
        assert.deepEqual(listed?.metrics, { ndcg_at_10: 0.15, champion_ndcg_at_10: 0.1 });
        assert.equal(listed?.tags.champion_version, v1);
      } finally {
        await registry.close();
        await rm(dir, { recursive: true, force: true });
      }
    });

    test('a model below the minimum is never promoted, even with no champion', async (t) => {
      const name = uniq('reranker-low');
      const registry = await options.open(t, name);
      if (!registry) return;
      const dir = await mkdtemp(join(tmpdir(), 'recsys-reg-'));
      try {
        await modelFile(dir, 'low.onnx', 1024);
        const { version } = await registry.register({
          onnxPath: join(dir, 'low.onnx'),
          metrics: { ndcg_at_10: 0.01 },
          params: {},
        });
        const gate = await registry.promoteIfBetter(
          version,
          { ndcg_at_10: 0.01 },
          { minNdcg: MIN },
        );
        assert.equal(gate.promoted, false);
        assert.match(gate.reason, /ndcg_at_10 0\.01 .*below the minimum 0\.05/);
        assert.equal(await registry.champion(), null);
        // A custom gate metric is honoured too.
        const byRecall = await registry.promoteIfBetter(
          version,
          { ndcg_at_10: 0.01, recall_at_20: 0.4 },
          { minNdcg: 0.1, metric: 'recall_at_20' },
        );
        assert.equal(byRecall.promoted, true, byRecall.reason);
        assert.equal((await registry.champion())?.version, version);
        assert.deepEqual(
          (await registry.versions()).map((v) => v.version),
          [version],
        );
      } finally {
        await registry.close();
        await rm(dir, { recursive: true, force: true });
      }
    });

    test('bad input is refused with a stable code', async (t) => {
      const registry = await options.open(t, uniq('reranker-bad'));
      if (!registry) return;
      try {
        await assert.rejects(
          registry.register({ onnxPath: '/nonexistent/model.onnx', metrics: {}, params: {} }),
          (err: unknown) =>
            err instanceof RegistryError && err.code === 'RECSYS_REGISTRY_BAD_INPUT',
        );
        await assert.rejects(
          registry.register({
            onnxPath: '/nonexistent/model.onnx',
            metrics: { ndcg_at_10: Number.NaN },
            params: {},
          }),
          { code: 'RECSYS_REGISTRY_BAD_INPUT' },
        );
        assert.deepEqual(await registry.versions(), []);
      } finally {
        await registry.close();
      }
    });
  });
}
