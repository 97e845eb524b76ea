/**
 * `npm run batch -- --serve` as a real process: it refuses to start without RECSYS_RETRAIN_TOKEN,
 * answers a missing or wrong bearer token with 401 and starts no batch (its own counters say so,
 * and the batch directory stays empty), lets the right token through, and a second process on a
 * port already taken stops at once with an error naming the port and its variable. The stream
 * and (multi-worker) serving processes refuse a taken port the same way.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sleep } from '../../../core/retry.js';
import { freePort } from '../ingest/bridge-process.js';
import { config as baseConfig, requireServices, run } from '../harness.js';

const TOKEN = 'retrain-test-token-0123456789';
/** The batch pipeline test's database; this file writes nothing to it. */
const DB = 9;

function firing(): string {
  return JSON.stringify({
    version: '4',
    status: 'firing',
    receiver: 'recsys-retrain',
    alerts: [{ status: 'firing', labels: { alertname: 'RecsysOnlineCtrLow' } }],
  });
}

/** Runs `node <script> args` until it exits (or `timeoutMs`); its exit code and stderr. */
function runToExit(
  script: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 30_000,
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(process.cwd(), script), ...args], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

async function post(port: number, headers: string[]): Promise<{ status: number; body: string }> {
  const res = await run('curl', [
    '-s',
    '-w',
    '\n%{http_code}',
    '-XPOST',
    '-H',
    'content-type: application/json',
    ...headers.flatMap((h) => ['-H', h]),
    '--data-binary',
    firing(),
    `http://127.0.0.1:${port}/v1/admin/retrain`,
  ]);
  const at = res.stdout.lastIndexOf('\n');
  return { status: Number(res.stdout.slice(at + 1)), body: res.stdout.slice(0, at) };
}

describe('batch --serve: the retrain webhook needs its token; ports are not shared', () => {
  let dir = '';
  let env: NodeJS.ProcessEnv;
  let port = 0;
  let child: ChildProcess | null = null;
  let skip = false;

  before(async (t) => {
    if (!(await requireServices(t as never, 'redis'))) {
      skip = true;
      return;
    }
    dir = await mkdtemp(join(tmpdir(), 'retrain-serve-'));
    port = await freePort();
    env = {
      ...process.env,
      RECSYS_HTTP_PORT: '',
      RECSYS_BATCH_PORT: String(port),
      RECSYS_REDIS_URL: `${baseConfig.redis.url}/${DB}`,
      RECSYS_BATCH_DIR: join(dir, 'batch'),
      RECSYS_LAKE_DIR: join(dir, 'lake'),
      RECSYS_MODEL_REGISTRY_URL: `file://${join(dir, 'models')}`,
      MLFLOW_TRACKING_URI: '',
      RECSYS_BATCH_SCHEDULE: '',
      RECSYS_RETRAIN_TOKEN: TOKEN,
      RECSYS_LOG_LEVEL: 'info',
    };
    child = spawn(process.execPath, [join(process.cwd(), 'dist/batch/main.js'), '--serve'], {
      env,
      stdio: ['ignore', 'ignore', 'ignore'],
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) break;
      assert.equal(child.exitCode, null, 'batch --serve exited');
      assert.ok(Date.now() < deadline, 'batch --serve not up in 30 s');
      await sleep(100);
    }
  });

  after(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('no token configured: --serve refuses to start, naming RECSYS_RETRAIN_TOKEN', async (t) => {
    if (skip) return t.skip('redis is down');
    const res = await runToExit('dist/batch/main.js', ['--serve'], {
      ...env,
      RECSYS_RETRAIN_TOKEN: '',
      RECSYS_BATCH_PORT: String(await freePort()),
    });
    assert.notEqual(res.code, 0);
    assert.match(res.output, /RECSYS_RETRAIN_TOKEN/);
  });

  test('a missing or wrong token gets 401 and starts no batch; the right one gets through', async (t) => {
    if (skip) return t.skip('redis is down');
    const missing = await post(port, []);
    assert.equal(missing.status, 401, missing.body);
    assert.equal(
      (JSON.parse(missing.body) as { error: { code: string } }).error.code,
      'RECSYS_RETRAIN_UNAUTHORIZED',
    );
    const wrong = await post(port, [`authorization: Bearer ${TOKEN}x`]);
    assert.equal(wrong.status, 401, wrong.body);
    const basic = await post(port, [`authorization: Basic ${TOKEN}`]);
    assert.equal(basic.status, 401, basic.body);

    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(metrics, /recsys_retrain_triggers_total\{outcome="unauthorized"[^}]*\} 3\b/);
    assert.doesNotMatch(metrics, /recsys_retrain_triggers_total\{outcome="accepted"[^}]*\} [1-9]/);
    assert.doesNotMatch(metrics, /recsys_retrain_runs_total\{/);
    assert.match(metrics, /recsys_retrain_running\{[^}]*\} 0\b/);
    assert.ok(!existsSync(join(dir, 'batch')), 'no batch run wrote its directory');

    // The right token passes the check: a resolved alert is read (and ignored), not refused.
    const resolved = await run('curl', [
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      '-XPOST',
      '-H',
      'content-type: application/json',
      '-H',
      `authorization: Bearer ${TOKEN}`,
      '--data-binary',
      firing().replaceAll('firing', 'resolved'),
      `http://127.0.0.1:${port}/v1/admin/retrain`,
    ]);
    assert.equal(resolved.stdout, '200');
  });

  test('a second batch --serve on the taken port stops, naming the port and RECSYS_BATCH_PORT', async (t) => {
    if (skip) return t.skip('redis is down');
    const res = await runToExit('dist/batch/main.js', ['--serve'], env);
    assert.equal(res.code, 1, res.output);
    assert.match(res.output, new RegExp(`127\\.0\\.0\\.1:${port} \\(RECSYS_BATCH_PORT\\)`));
    assert.match(res.output, /in use/);
    // The first one still answers.
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
  });

  test('stream and multi-worker serving processes refuse a taken port the same way', async (t) => {
    if (skip) return t.skip('redis is down');
    const taken: Server = createServer();
    const takenPort = await new Promise<number>((resolve) =>
      taken.listen(0, '127.0.0.1', () => resolve((taken.address() as { port: number }).port)),
    );
    try {
      const stream = await runToExit('dist/stream/main.js', ['ingest'], {
        ...env,
        RECSYS_STREAM_PORT: String(takenPort),
      });
      assert.equal(stream.code, 1, stream.output);
      assert.match(stream.output, new RegExp(`:${takenPort} \\(RECSYS_STREAM_PORT\\)`));
      const serving = await runToExit('dist/serving/main.js', [], {
        ...env,
        RECSYS_SERVING_PORT: String(takenPort),
        RECSYS_SERVING_WORKERS: '2',
      });
      assert.equal(serving.code, 1, serving.output);
      assert.match(serving.output, new RegExp(`:${takenPort} \\(RECSYS_SERVING_PORT\\)`));
    } finally {
      taken.close();
    }
  });
});
