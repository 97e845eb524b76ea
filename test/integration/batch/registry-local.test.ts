/**
 * The local-directory registry: the shared behavioural suite, the on-disk layout, and
 * concurrent registrations from separate processes (distinct, gap-free, increasing versions).
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openRegistry } from '../../../store/registry/index.js';
import { config, log, run, uniq } from '../harness.js';
import { modelFile, registrySuite } from './registry-suite.js';

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'recsys-local-registry-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

const open = (modelName: string) =>
  openRegistry({ ...config.batch, registryUrl: `file://${root}`, modelName }, log);

registrySuite('local', { open: async (_t, modelName) => open(modelName) });

describe('model registry (local): layout and concurrency', () => {
  test('files on disk: versions/<n>/{model.onnx,meta.json}, aliases.json', async () => {
    const name = uniq('layout');
    const registry = open(name);
    const bytes = await modelFile(root, `${name}.onnx`, 4096);
    const { version } = await registry.register({
      onnxPath: join(root, `${name}.onnx`),
      metrics: { ndcg_at_10: 0.4 },
      params: { seed: 7 },
    });
    await registry.promoteIfBetter(version, { ndcg_at_10: 0.4 }, { minNdcg: 0.05 });
    const dir = join(root, name);
    assert.deepEqual((await readdir(join(dir, 'versions', version))).sort(), [
      'meta.json',
      'model.onnx',
    ]);
    assert.ok((await readFile(join(dir, 'versions', version, 'model.onnx'))).equals(bytes));
    const meta = JSON.parse(await readFile(join(dir, 'versions', version, 'meta.json'), 'utf8'));
    assert.deepEqual(meta.metrics, { ndcg_at_10: 0.4 });
    assert.deepEqual(meta.params, { seed: '7' });
    assert.match(meta.sha256, /^[0-9a-f]{64}$/);
    assert.deepEqual(JSON.parse(await readFile(join(dir, 'aliases.json'), 'utf8')), {
      champion: version,
    });
    // No temp files or lock left behind.
    assert.deepEqual((await readdir(dir)).sort(), ['aliases.json', 'versions']);
  });

  test('a half-written version (no meta.json) is skipped and its number not reused', async () => {
    const name = uniq('crash');
    const registry = open(name);
    await modelFile(root, `${name}.onnx`, 128);
    const { version: v1 } = await registry.register({
      onnxPath: join(root, `${name}.onnx`),
      metrics: { ndcg_at_10: 0.1 },
      params: {},
    });
    // A registration that died after claiming version 2.
    await mkdir(join(root, name, 'versions', '2'));
    await writeFile(join(root, name, 'versions', '2', 'model.onnx'), 'partial');
    const { version: v3 } = await registry.register({
      onnxPath: join(root, `${name}.onnx`),
      metrics: { ndcg_at_10: 0.1 },
      params: {},
    });
    assert.deepEqual([v1, v3], ['1', '3']);
    assert.deepEqual(
      (await registry.versions()).map((v) => v.version),
      ['1', '3'],
    );
  });

  test('8 processes registering and promoting at once get distinct versions', async (t) => {
    const name = uniq('race');
    await modelFile(root, `${name}.onnx`, 32 * 1024);
    const registryModule = join(process.cwd(), 'dist', 'store', 'registry', 'index.js');
    const logModule = join(process.cwd(), 'dist', 'core', 'log.js');
    // Each process registers 3 versions with increasing NDCG and promotes each one.
    const script = `
      const { openRegistry } = await import(${JSON.stringify(registryModule)});
      const { createLogger } = await import(${JSON.stringify(logModule)});
      const r = openRegistry({ registryUrl: ${JSON.stringify(`file://${root}`)}, modelName: ${JSON.stringify(name)}, dir: '.' }, createLogger('warn'));
      const out = [];
      for (let i = 0; i < 3; i++) {
        const ndcg = Math.random();
        const { version } = await r.register({ onnxPath: ${JSON.stringify(join(root, `${name}.onnx`))}, metrics: { ndcg_at_10: ndcg }, params: {} });
        await r.promoteIfBetter(version, { ndcg_at_10: ndcg }, { minNdcg: 0 });
        out.push(version);
      }
      console.log(JSON.stringify(out));
    `;
    const t0 = performance.now();
    const results = await Promise.all(
      Array.from({ length: 8 }, () =>
        run('node', ['--input-type=module', '-e', script], { timeoutMs: 60_000 }),
      ),
    );
    t.diagnostic(`8 processes x 3 registrations: ${Math.round(performance.now() - t0)} ms`);
    const all: string[] = [];
    for (const res of results) {
      assert.equal(res.code, 0, res.stderr);
      all.push(...(JSON.parse(res.stdout.trim()) as string[]));
    }
    assert.deepEqual(
      all.map(Number).sort((a, b) => a - b),
      Array.from({ length: 24 }, (_, i) => i + 1),
      'every version number used exactly once, none skipped',
    );
    const registry = open(name);
    const versions = await registry.versions();
    assert.equal(versions.length, 24);
    // The gate ran under the lock: the champion is the best of all 24.
    const best = versions.reduce((a, b) =>
      (b.metrics.ndcg_at_10 ?? 0) > (a.metrics.ndcg_at_10 ?? 0) ? b : a,
    );
    assert.equal((await registry.champion())?.version, best.version);
  });
});
