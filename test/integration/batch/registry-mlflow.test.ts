/**
 * The MLflow registry against a real MLflow tracking server installed from PyPI into the
 * project's venv and started by this file (`mlflow-server.ts`): the shared behavioural suite,
 * then the result checked from outside with curl (alias `champion` → the right version, the
 * artifact bytes), and an unreachable server reported as a retriable dependency error.
 * Without Python/network the file skips; under CI=true it fails.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { DependencyUnavailableError } from '../../../core/index.js';
import { MlflowModelRegistry, openRegistry } from '../../../store/registry/index.js';
import { CI, config, log, run, runBytes } from '../harness.js';
import { freePort } from '../ingest/bridge-process.js';
import { startMlflowServer, type MlflowServer } from './mlflow-server.js';
import { registrySuite } from './registry-suite.js';

let server: MlflowServer | null = null;
let startError: Error | null = null;
let cacheDir: string;
let reported = false;

before(async () => {
  cacheDir = await mkdtemp(join(tmpdir(), 'recsys-mlflow-cache-'));
  try {
    server = await startMlflowServer();
  } catch (err) {
    startError = err as Error;
  }
});
after(async () => {
  await server?.stop();
  await rm(cacheDir, { recursive: true, force: true });
});

function requireMlflow(t: TestContext): MlflowServer | null {
  if (server) return server;
  const message = `MLflow server could not start: ${startError?.message ?? 'unknown'}`;
  if (CI) throw new Error(message);
  t.skip(message);
  return null;
}

registrySuite('mlflow', {
  async open(t, modelName) {
    const s = requireMlflow(t);
    if (!s) return null;
    if (!reported) t.diagnostic(`mlflow server started in ${s.startMs} ms`);
    reported = true;
    return openRegistry({ ...config.batch, registryUrl: s.url, modelName }, log, { cacheDir });
  },
  async afterFlow(_t, modelName, { v2 }) {
    const s = server as MlflowServer;
    // From outside, with curl: the alias points at v2...
    const q = new URLSearchParams({ name: modelName, alias: 'champion' });
    const res = await run('curl', ['-sf', `${s.url}/api/2.0/mlflow/registered-models/alias?${q}`]);
    assert.equal(res.code, 0, res.stderr);
    const mv = (JSON.parse(res.stdout) as { model_version: Record<string, unknown> }).model_version;
    assert.equal(mv.version, v2);
    assert.equal(mv.status, 'READY');
    assert.deepEqual(mv.aliases, ['champion']);
    assert.match(String(mv.source), /^mlflow-artifacts:\/.+\/artifacts\/model$/);
    // ...whose run carries the metrics and params...
    const runRes = await run('curl', [
      '-sf',
      `${s.url}/api/2.0/mlflow/runs/get?run_id=${mv.run_id}`,
    ]);
    const runJson = JSON.parse(runRes.stdout) as {
      run: { info: { status: string }; data: { metrics: { key: string; value: number }[] } };
    };
    assert.equal(runJson.run.info.status, 'FINISHED');
    assert.deepEqual(
      runJson.run.data.metrics.map((m) => [m.key, m.value]),
      [['ndcg_at_10', 0.3]],
    );
    // ...and the artifact proxy serves the bytes champion() returned.
    const path = String(mv.source).replace(/^mlflow-artifacts:\/+/, '');
    const bytes = await runBytes('curl', [
      '-sf',
      `${s.url}/api/2.0/mlflow-artifacts/artifacts/${path}/model.onnx`,
    ]);
    assert.equal(bytes.code, 0);
    const registry = openRegistry({ ...config.batch, registryUrl: s.url, modelName }, log, {
      cacheDir,
    });
    assert.ok(bytes.stdout.equals(await readFile((await registry.champion())!.onnxPath)));
  },
});

describe('model registry (mlflow): failures', () => {
  test('an unreachable server is a retriable DependencyUnavailableError', async () => {
    const port = await freePort(); // nothing listens there
    const registry = new MlflowModelRegistry({
      url: `http://127.0.0.1:${port}`,
      modelName: 'x',
      cacheDir,
      log,
      retry: { attempts: 3, initialDelayMs: 10 },
    });
    const file = join(cacheDir, 'x.onnx');
    await writeFile(file, 'x');
    const t0 = Date.now();
    await assert.rejects(registry.champion(), (err: unknown) => {
      assert.ok(err instanceof DependencyUnavailableError, String(err));
      assert.equal(err.code, 'RECSYS_MLFLOW_UNAVAILABLE');
      assert.equal(err.retriable, true);
      assert.match(err.message, /ECONNREFUSED/);
      return true;
    });
    await assert.rejects(
      registry.register({ onnxPath: file, metrics: { ndcg_at_10: 0.5 }, params: {} }),
      { code: 'RECSYS_MLFLOW_UNAVAILABLE' },
    );
    assert.ok(Date.now() - t0 < 10_000, 'bounded retries');
  });
});
