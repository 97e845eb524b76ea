/**
 * Issue 16, item 14, `npm run batch -- --serve` as a real process and SIGTERM:
 *
 * - idle: it exits 0 at once;
 * - with a retrain running (started through the webhook, with curl) whose Python training is
 *   under way: within RECSYS_SHUTDOWN_TIMEOUT_MS the run is abandoned: the Python process is
 *   killed (none is left behind), no model is registered, no candidate version goes live, and
 *   the exit code is 124 (work handed back, to be redone by the next run);
 * - with a deadline that leaves it time, the run under way finishes (model registered,
 *   candidates live) and the exit code is 0.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { loadConfig } from '../../../core/config.js';
import { sleep } from '../../../core/retry.js';
import { generate } from '../../../batch/generate.js';
import { CandidateStore } from '../../../store/candidates.js';
import { openRegistry } from '../../../store/registry/index.js';
import { freePort } from '../ingest/bridge-process.js';
import { config as baseConfig, log, requireServices, run } from '../harness.js';

const TOKEN = 'shutdown-test-token-0123456789';
/** An Alertmanager webhook for the alert that starts a retrain. */
const FIRING = JSON.stringify({
  version: '4',
  status: 'firing',
  receiver: 'recsys-retrain',
  alerts: [{ status: 'firing', labels: { alertname: 'RecsysOnlineCtrLow' } }],
});
/** This helper's Redis database. */
const DB = 4;

interface Batch {
  child: ChildProcess;
  port: number;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Process ids of `pid`'s children whose command line includes `needle`. */
async function childrenMatching(pid: number, needle: string): Promise<number[]> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  const out: number[] = [];
  for (const child of text.trim().split(/\s+/).filter(Boolean).map(Number)) {
    const cmd = await readFile(`/proc/${child}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(needle)) out.push(child);
  }
  return out;
}

describe(
  'batch --serve: SIGTERM finishes or abandons the run in time',
  { timeout: 600_000 },
  () => {
    let dir = '';
    let env: NodeJS.ProcessEnv = {};
    let skip = false;
    const started: ChildProcess[] = [];

    before(async (t) => {
      if (!(await requireServices(t as never, 'redis'))) {
        skip = true;
        return;
      }
      dir = await mkdtemp(join(tmpdir(), 'batch-shutdown-'));
      env = {
        ...process.env,
        RECSYS_HTTP_PORT: '',
        RECSYS_REDIS_URL: `${baseConfig.redis.url}/${DB}`,
        RECSYS_BATCH_DIR: join(dir, 'batch'),
        RECSYS_LAKE_DIR: join(dir, 'lake'),
        RECSYS_MODEL_REGISTRY_URL: `file://${join(dir, 'models')}`,
        MLFLOW_TRACKING_URI: '',
        RECSYS_BATCH_SCHEDULE: '',
        RECSYS_RETRAIN_TOKEN: TOKEN,
        RECSYS_LOG_LEVEL: 'info',
      };
      const config = loadConfig(env);
      const redis = new Redis(config.redis.url);
      try {
        await redis.flushdb();
        await generate({
          seed: 5,
          events: 150_000,
          endTs: Date.now(),
          lakeDir: config.lake.dir,
          topic: config.kafka.topics.events,
          catalogPath: join(config.batch.dir, 'catalog.jsonl'),
          redis,
        });
      } finally {
        redis.disconnect();
      }
    });

    after(async () => {
      for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    async function startServe(shutdownMs: number): Promise<Batch> {
      const port = await freePort();
      const child = spawn(
        process.execPath,
        [join(process.cwd(), 'dist/batch/main.js'), '--serve'],
        {
          env: {
            ...env,
            RECSYS_BATCH_PORT: String(port),
            RECSYS_SHUTDOWN_TIMEOUT_MS: String(shutdownMs),
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      started.push(child);
      let output = '';
      child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
        (resolve) => child.once('exit', (code, signal) => resolve({ code, signal })),
      );
      const deadline = Date.now() + 30_000;
      for (;;) {
        const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then(
          (r) => r.ok,
          () => false,
        );
        if (ok) break;
        assert.equal(child.exitCode, null, `batch --serve exited:\n${output}`);
        assert.ok(Date.now() < deadline, 'batch --serve not up in 30 s');
        await sleep(100);
      }
      return { child, port, output: () => output, exited };
    }

    /** Starts a retrain through the webhook with curl. */
    async function trigger(b: Batch): Promise<void> {
      const res = await run(
        'curl',
        ['-s', '-w', '\n%{http_code}', '-XPOST'].concat(
          ['-H', `authorization: Bearer ${TOKEN}`, '-H', 'content-type: application/json'],
          ['--data-binary', FIRING],
          [`http://127.0.0.1:${b.port}/v1/admin/retrain`],
        ),
      );
      assert.equal(res.stdout.split('\n').pop(), '202', res.stdout);
    }

    async function stop(b: Batch, limitMs: number): Promise<{ code: number | null; ms: number }> {
      const t0 = performance.now();
      b.child.kill('SIGTERM');
      // The limit's timer is cleared once the process exits: a pending one would keep this
      // file's process alive for the rest of it.
      let timer: NodeJS.Timeout | undefined;
      const exit = await Promise.race([
        b.exited,
        new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), limitMs))),
      ]).finally(() => clearTimeout(timer));
      const ms = performance.now() - t0;
      assert.ok(exit, `no exit within ${limitMs} ms:\n${b.output().slice(-4000)}`);
      return { code: exit.code, ms };
    }

    async function registered(): Promise<string[]> {
      const registry = openRegistry(loadConfig(env).batch, log);
      try {
        return (await registry.versions()).map((v) => v.version);
      } finally {
        await registry.close();
      }
    }
    async function liveCandidates(): Promise<number | null> {
      const redis = new Redis(`${baseConfig.redis.url}/${DB}`);
      try {
        return await new CandidateStore(redis).currentVersion();
      } finally {
        redis.disconnect();
      }
    }

    test('idle: exits 0 at once', async (t) => {
      if (skip) return t.skip('redis down');
      const b = await startServe(5000);
      const { code, ms } = await stop(b, 10_000);
      t.diagnostic(`idle stop: exit ${code} in ${ms.toFixed(0)} ms`);
      assert.equal(code, 0, b.output().slice(-4000));
      assert.ok(ms < 2000);
    });

    test('a run still training at the deadline is abandoned: Python killed, nothing published, exit 124', async (t) => {
      if (skip) return t.skip('redis down');
      const deadlineMs = 3000;
      const b = await startServe(deadlineMs);
      await trigger(b);
      let python: number[] = [];
      const waitUntil = Date.now() + 240_000;
      while (python.length === 0 && Date.now() < waitUntil) {
        python = await childrenMatching(b.child.pid as number, 'train.py');
        await sleep(100);
      }
      assert.ok(python.length > 0, `training never started:\n${b.output().slice(-4000)}`);
      const { code, ms } = await stop(b, deadlineMs + 5000);
      t.diagnostic(`stop while training: exit ${code} in ${ms.toFixed(0)} ms`);
      assert.equal(code, 124, b.output().slice(-4000));
      assert.ok(ms < deadlineMs + 500, `exited after ${ms} ms`);
      await sleep(200);
      for (const pid of python) {
        const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => 'gone');
        assert.ok(!existsSync(`/proc/${pid}`), `python ${pid} is left: ${status.slice(0, 300)}`);
      }
      assert.match(b.output(), /batch run abandoned/);
      assert.deepEqual(await registered(), [], 'no model registered');
      assert.equal(await liveCandidates(), null, 'no candidate version live');
    });

    test('a run that fits in the deadline finishes, and the exit is 0', async (t) => {
      if (skip) return t.skip('redis down');
      const b = await startServe(300_000);
      await trigger(b);
      await sleep(1000);
      const { code, ms } = await stop(b, 310_000);
      t.diagnostic(
        `stop with a run under way and time to finish: exit ${code} in ${ms.toFixed(0)} ms`,
      );
      assert.equal(code, 0, b.output().slice(-4000));
      assert.match(b.output(), /\[publish\] candidates version/);
      assert.ok((await registered()).length > 0, 'the model was registered');
      assert.notEqual(await liveCandidates(), null, 'candidates are live');
    });
  },
);
